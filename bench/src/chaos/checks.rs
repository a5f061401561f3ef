//! What must hold after the run, judged from outside only: the payment
//! gateway's ledger, the read models of every role, the notification feeds and
//! the answers the run's own calls got.

use crate::client::{CallBook, Client};
use crate::drive::{Book, Established, Kind, Users, is_final};
use crate::plan::Path;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

/// One line of the table.
pub struct Row {
    pub name: &'static str,
    pub checked: usize,
    pub breaches: Vec<String>,
    /// Judged on state that settles over time (read models, ledger): worth
    /// looking again while it has breaches. Other rows are history.
    pub eventual: bool,
}

impl Row {
    fn new(name: &'static str, eventual: bool) -> Self {
        Row {
            name,
            checked: 0,
            breaches: Vec::new(),
            eventual,
        }
    }
}

/// Everything read back for the checks.
pub struct Snapshot {
    /// The gateway's ledger, `GET /v1/payments`.
    pub payments: Vec<Value>,
    /// Customer view (`GET /api/orders/{id}`) of each established order.
    pub views: HashMap<String, Value>,
    /// `GET /api/orders` of each customer.
    pub customer_lists: Vec<Vec<Value>>,
    /// `GET /api/shop/orders` of each owner, by order id.
    pub shop_lists: Vec<HashMap<String, Value>>,
    /// `GET /api/rider/deliveries` of each rider.
    pub deliveries: Vec<Vec<Value>>,
    /// `GET /api/notifications` of every user, by user id.
    pub feeds: HashMap<String, Vec<Value>>,
    /// Reads that failed (each makes the checks that need it fail too).
    pub errors: Vec<String>,
}

pub async fn read_back(
    client: &Client,
    users: &Users,
    orders: &[Established],
    paysim: &str,
) -> Snapshot {
    let mut errors = Vec::new();
    let payments = match client
        .api
        .fetch_json(
            &format!("{}/v1/payments", paysim.trim_end_matches('/')),
            None,
        )
        .await
    {
        Ok((200, Value::Array(p))) => p,
        Ok((s, b)) => {
            errors.push(format!("GET {paysim}/v1/payments: {s} {b}"));
            Vec::new()
        }
        Err(e) => {
            errors.push(format!("GET {paysim}/v1/payments: {e}"));
            Vec::new()
        }
    };
    let reads = orders.iter().map(|o| async move {
        let token = &users.customers[o.plan.customer].token;
        let r = client
            .get("check_order", &format!("/api/orders/{}", o.order_id), token)
            .await;
        (o.order_id.clone(), r)
    });
    let reads: Vec<_> = futures::StreamExt::collect(futures::StreamExt::buffer_unordered(
        futures::stream::iter(reads),
        8,
    ))
    .await;
    let mut views = HashMap::new();
    for (id, r) in reads {
        if r.status == 200 {
            views.insert(id, r.body);
        } else {
            errors.push(format!("GET /api/orders/{id}: {} {}", r.status, r.body));
        }
    }
    let mut list = |res: Result<Vec<Value>, String>| match res {
        Ok(v) => v,
        Err(e) => {
            errors.push(e);
            Vec::new()
        }
    };
    let mut customer_lists = Vec::new();
    for c in &users.customers {
        customer_lists.push(list(
            client.get_all("check_list", "/api/orders", &c.token).await,
        ));
    }
    let mut shop_lists = Vec::new();
    for o in &users.owners {
        let l = list(
            client
                .get_all("check_list", "/api/shop/orders", &o.token)
                .await,
        );
        shop_lists.push(by_id(l));
    }
    let mut deliveries = Vec::new();
    for r in &users.riders {
        deliveries.push(list(
            client
                .get_all("check_list", "/api/rider/deliveries", &r.token)
                .await,
        ));
    }
    let mut feeds = HashMap::new();
    for u in users
        .customers
        .iter()
        .chain(&users.owners)
        .chain(&users.riders)
    {
        feeds.insert(
            u.id.clone(),
            list(
                client
                    .get_all("check_feed", "/api/notifications", &u.token)
                    .await,
            ),
        );
    }
    Snapshot {
        payments,
        views,
        customer_lists,
        shop_lists,
        deliveries,
        feeds,
        errors,
    }
}

fn by_id(l: Vec<Value>) -> HashMap<String, Value> {
    l.into_iter()
        .filter_map(|v| Some((v["orderId"].as_str()?.to_string(), v)))
        .collect()
}

fn history(v: &Value) -> Vec<(String, String)> {
    v["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h["status"].as_str().unwrap_or("?").to_string(),
                h["at"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn has(v: &Value, status: &str) -> bool {
    history(v).iter().any(|(s, _)| s == status)
}

fn rider_of(v: &Value) -> Option<&str> {
    v["rider"]["id"].as_str()
}

/// Epoch milliseconds of an RFC 3339 time.
fn ms(at: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(at).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64)
}

const RIDER_STATUSES: [&str; 4] = [
    "RIDER_ASSIGNED",
    "DELIVERY_STARTED",
    "PICKED_UP",
    "DELIVERED",
];

pub struct Inputs<'a> {
    pub users: &'a Users,
    pub book: &'a Book,
    pub calls: &'a CallBook,
    pub snap: &'a Snapshot,
    /// Riders offered a probe order at the end (None: no probe ran).
    pub probe_offered: Option<&'a HashSet<usize>>,
    pub unexpected_exits: &'a [String],
    pub processes: usize,
    /// (fault, went as planned, note)
    pub faults: &'a [(String, bool, String)],
    pub faults_planned: usize,
}

pub fn evaluate(i: &Inputs) -> Vec<Row> {
    let orders = &i.book.orders;
    let views = &i.snap.views;
    let mut payments: HashMap<&str, Vec<&Value>> = HashMap::new();
    for p in &i.snap.payments {
        if let Some(o) = p["orderId"].as_str() {
            payments.entry(o).or_default().push(p);
        }
    }
    let established: HashSet<&str> = orders.iter().map(|o| o.order_id.as_str()).collect();
    let tag = |o: &Established| format!("#{} {} ({})", o.plan.n, o.order_id, o.plan.path.name());
    let mut rows = Vec::new();

    // Every established order charged exactly once, the amount the menu prices make.
    let mut r = Row::new("charged exactly once", true);
    for o in orders {
        r.checked += 1;
        let paid = payments
            .get(o.order_id.as_str())
            .map_or(&[][..], Vec::as_slice);
        if paid.len() != 1 {
            r.breaches
                .push(format!("{}: {} charges at the gateway", tag(o), paid.len()));
        } else if paid[0]["amount"].as_i64() != Some(o.plan.total) || o.total != o.plan.total {
            r.breaches.push(format!(
                "{}: charged {}, answered total {}, menu total {}",
                tag(o),
                paid[0]["amount"],
                o.total,
                o.plan.total
            ));
        }
    }
    rows.push(r);

    // Refunded exactly once iff it ended undelivered.
    let mut r = Row::new("refunded exactly once iff undelivered", true);
    for o in orders {
        let Some(status) = views.get(&o.order_id).and_then(|v| v["status"].as_str()) else {
            continue;
        };
        let paid = payments
            .get(o.order_id.as_str())
            .map_or(&[][..], Vec::as_slice);
        if !is_final(status) || paid.len() != 1 {
            continue; // judged by "final status" and "charged exactly once"
        }
        r.checked += 1;
        let p = paid[0];
        let (amount, refunded) = (
            p["amount"].as_i64().unwrap_or(-1),
            p["refunded"].as_i64().unwrap_or(0),
        );
        let count = p["refundCount"].as_i64();
        let ok = if status == "DELIVERED" {
            refunded == 0 && count.unwrap_or(0) == 0
        } else {
            refunded == amount && count.is_none_or(|c| c == 1)
        };
        if !ok {
            r.breaches.push(format!(
                "{}: {status}, charged {amount}, refunded {refunded} in {} refunds",
                tag(o),
                count.map_or("?".into(), |c| c.to_string())
            ));
        }
    }
    rows.push(r);

    let mut r = Row::new("never both delivered and refunded", true);
    for o in orders {
        let Some(v) = views.get(&o.order_id) else {
            continue;
        };
        r.checked += 1;
        let refunded_at_gateway: i64 = payments
            .get(o.order_id.as_str())
            .into_iter()
            .flatten()
            .map(|p| p["refunded"].as_i64().unwrap_or(0))
            .sum();
        if has(v, "DELIVERED")
            && (refunded_at_gateway > 0 || !v["refund"].is_null() || v["status"] != "DELIVERED")
        {
            r.breaches.push(format!(
                "{}: delivered, yet status {} refund {} and {refunded_at_gateway} refunded at the gateway",
                tag(o),
                v["status"],
                v["refund"]
            ));
        }
    }
    rows.push(r);

    let mut r = Row::new("final status after the settle period", true);
    for o in orders {
        r.checked += 1;
        match views.get(&o.order_id) {
            None => r
                .breaches
                .push(format!("{}: its view could not be read", tag(o))),
            Some(v) => {
                let s = v["status"].as_str().unwrap_or("?");
                if !is_final(s) {
                    r.breaches.push(format!("{}: still {s}", tag(o)));
                } else if s != "DELIVERED" && v["refund"]["status"] != "REFUNDED" {
                    r.breaches
                        .push(format!("{}: {s}, refund {}", tag(o), v["refund"]));
                }
            }
        }
    }
    rows.push(r);

    // A charge the API never established an order for must be given back, once.
    let mut r = Row::new("charges without an order refunded", true);
    for p in &i.snap.payments {
        let order = p["orderId"].as_str().unwrap_or("?");
        if established.contains(order) {
            continue;
        }
        r.checked += 1;
        let (amount, refunded) = (
            p["amount"].as_i64().unwrap_or(-1),
            p["refunded"].as_i64().unwrap_or(0),
        );
        if refunded != amount || p["refundCount"].as_i64().is_some_and(|c| c != 1) {
            r.breaches.push(format!(
                "order {order} (never answered 201): charged {amount}, refunded {refunded} in {} refunds",
                p["refundCount"]
            ));
        }
    }
    rows.push(r);

    let mut r = Row::new("every HTTP call answered", false);
    r.checked = i.calls.calls as usize;
    r.breaches = i.calls.unanswered.clone();
    rows.push(r);

    let mut r = Row::new("no 5xx but 503", false);
    r.checked = i.calls.calls as usize;
    r.breaches = i.calls.server_errors.clone();
    rows.push(r);

    rows.push(conflicts(i));
    rows.push(repeats(i));
    rows.push(answers(i));
    rows.push(asked_for(i));
    rows.push(histories(i));
    rows.push(read_models(i));
    rows.extend(riders(i));
    rows.push(notifications(i));

    let mut r = Row::new("processes up between kills", false);
    r.checked = i.processes;
    r.breaches = i.unexpected_exits.to_vec();
    rows.push(r);

    let mut r = Row::new("faults injected as planned", false);
    r.checked = i.faults_planned;
    for (what, ok, note) in i.faults {
        if !ok {
            r.breaches.push(format!("{what}: {note}"));
        }
    }
    if i.faults.len() < i.faults_planned {
        r.breaches.push(format!(
            "{} of {} faults ran",
            i.faults.len(),
            i.faults_planned
        ));
    }
    rows.push(r);

    let mut r = Row::new("read back for the checks", true);
    r.checked = 1;
    r.breaches = i.snap.errors.clone();
    rows.push(r);
    rows
}

/// Two actions sent at once: the first transition wins, the other is refused.
fn conflicts(i: &Inputs) -> Row {
    let mut r = Row::new("conflicting actions: one wins", true);
    for c in &i.book.conflicts {
        let (a, b) = (&i.book.actions[c.calls.0], &i.book.actions[c.calls.1]);
        if !a.reply.answered() || !b.reply.answered() {
            continue; // in "every HTTP call answered"
        }
        r.checked += 1;
        let winners = [a, b].iter().filter(|x| x.reply.ok()).count();
        let what = format!(
            "{} {} vs {}: answered {} and {}",
            c.order_id,
            c.kinds.0.name(),
            c.kinds.1.name(),
            a.reply.status,
            b.reply.status
        );
        if winners == 2 {
            r.breaches.push(format!("{what} (both applied)"));
            continue;
        }
        if winners == 1 {
            continue;
        }
        let v = i.snap.views.get(&c.order_id);
        let moved_on = match c.kinds {
            // Nothing but the shop's timer may have taken the order out of PAID first.
            (Kind::Cancel | Kind::Reject, Kind::Accept) => v.is_some_and(|v| {
                history(v).get(1).is_some_and(|(s, _)| s == "REJECTED")
                    && v["reason"] == "SHOP_TIMEOUT"
            }),
            // The offer may lapse (RIDER_OFFER_TIMEOUT) before either lands.
            (Kind::RiderAccept, Kind::RiderDecline) => true,
            _ => false,
        };
        if !moved_on {
            r.breaches.push(format!("{what} (neither applied)"));
        }
    }
    r
}

/// The same request with the same `Idempotency-Key` answers the first answer.
fn repeats(i: &Inputs) -> Row {
    let mut r = Row::new("repeats answer the first answer", false);
    for p in &i.book.repeats {
        if !p.first.answered() || !p.second.answered() {
            continue;
        }
        r.checked += 1;
        let mode = match p.mode {
            crate::plan::Repeat::After => "after",
            crate::plan::Repeat::Together => "together",
        };
        if p.first.status != p.second.status {
            r.breaches.push(format!(
                "{} (sent {mode}): {} then {} {}",
                p.what, p.first.status, p.second.status, p.second.body
            ));
        } else if p.first.ok() && p.first.body != p.second.body {
            r.breaches.push(format!(
                "{} (sent {mode}): same status, different bodies {} / {}",
                p.what, p.first.body, p.second.body
            ));
        }
    }
    r
}

/// Each answer agrees with what the order's history says happened: a 200 took
/// effect, a refusal did not (unless another call of the same kind was the one).
fn answers(i: &Inputs) -> Row {
    let mut r = Row::new("answers agree with the history", true);
    let by_order: HashMap<&str, &Established> = i
        .book
        .orders
        .iter()
        .map(|o| (o.order_id.as_str(), o))
        .collect();
    // (order, kind, rider for offer accepts) that some call got a 200 for.
    let who = |k: Kind, rider: Option<usize>| rider.filter(|_| k == Kind::RiderAccept);
    let won: HashSet<(&str, Kind, Option<usize>)> = i
        .book
        .actions
        .iter()
        .filter(|a| a.reply.ok())
        .map(|a| (a.order_id.as_str(), a.kind, who(a.kind, a.rider)))
        .collect();
    for a in &i.book.actions {
        if !a.reply.answered() {
            continue;
        }
        let (Some(v), Some(o)) = (
            i.snap.views.get(&a.order_id),
            by_order.get(a.order_id.as_str()),
        ) else {
            continue;
        };
        r.checked += 1;
        let rider_id = a.rider.map(|x| i.users.riders[x].id.as_str());
        let status = v["status"].as_str().unwrap_or("?");
        let reason = v["reason"].as_str();
        let body = a.reply.body_status().unwrap_or("");
        let problem: Option<String> = if a.reply.ok() {
            match a.kind {
                Kind::Cancel
                    if !(status == "CANCELLED"
                        && reason == Some("CUSTOMER_CANCELLED")
                        && body == "CANCELLED"
                        && !has(v, "ACCEPTED")) =>
                {
                    Some(format!("answered {body}, order {status} reason {reason:?}"))
                }
                Kind::Reject
                    if !(status == "REJECTED"
                        && reason == Some(o.reject_reason.as_str())
                        && body == "REJECTED"
                        && !has(v, "ACCEPTED")) =>
                {
                    Some(format!("answered {body}, order {status} reason {reason:?}"))
                }
                Kind::Accept if !(has(v, "ACCEPTED") && body == "ACCEPTED") => Some(format!(
                    "answered {body}, history lacks ACCEPTED or answer is not ACCEPTED"
                )),
                Kind::RiderAccept
                    if !(rider_of(v) == rider_id
                        && has(v, "RIDER_ASSIGNED")
                        && matches!(body, "RIDER_ASSIGNED" | "DELIVERY_STARTED")) =>
                {
                    Some(format!(
                        "answered {body}, yet the order's rider is {:?}",
                        rider_of(v)
                    ))
                }
                Kind::RiderDecline if rider_of(v) == rider_id => {
                    Some("declined, yet this rider carries the order".to_string())
                }
                Kind::Pickup if !(has(v, "PICKED_UP") && body == "PICKED_UP") => {
                    Some(format!("answered {body}, history lacks PICKED_UP"))
                }
                Kind::Complete if !(has(v, "DELIVERED") && body == "DELIVERED") => {
                    Some(format!("answered {body}, history lacks DELIVERED"))
                }
                _ => None,
            }
        } else if a.reply.status != 409 {
            Some(format!(
                "refused with {} (a call that no longer fits is a 409): {}",
                a.reply.status, a.reply.body
            ))
        } else {
            let took_effect = match a.kind {
                Kind::Cancel => reason == Some("CUSTOMER_CANCELLED"),
                Kind::Reject => reason == Some(o.reject_reason.as_str()),
                Kind::Accept => has(v, "ACCEPTED"),
                Kind::RiderAccept => rider_of(v) == rider_id,
                Kind::Pickup => has(v, "PICKED_UP"),
                Kind::Complete => has(v, "DELIVERED"),
                Kind::Ready | Kind::RiderDecline => false,
            };
            let someone_won = won.contains(&(a.order_id.as_str(), a.kind, who(a.kind, a.rider)));
            (took_effect && !someone_won).then(|| {
                "refused with 409, yet it took effect and no call of its kind was answered 200"
                    .to_string()
            })
        };
        if let Some(p) = problem {
            r.breaches.push(format!(
                "#{} {} {}{}: {p}",
                o.plan.n,
                a.order_id,
                a.kind.name(),
                a.rider
                    .map_or(String::new(), |x| format!(" by {}", i.users.riders[x].name))
            ));
        }
    }
    r
}

/// Every change in an order's history was asked for by a call answered 200
/// (timers aside): nothing happens to an order that nobody asked for, or that
/// the asker was told did not happen.
fn asked_for(i: &Inputs) -> Row {
    let mut r = Row::new("every change asked for by a 200", true);
    for o in &i.book.orders {
        let Some(v) = i.snap.views.get(&o.order_id) else {
            continue;
        };
        r.checked += 1;
        let calls: Vec<_> = i
            .book
            .actions
            .iter()
            .filter(|a| a.order_id == o.order_id)
            .collect();
        let asked = |k: Kind, rider: Option<&str>| {
            calls.iter().any(|a| {
                a.kind == k
                    && (a.reply.ok() || !a.reply.answered())
                    && rider
                        .is_none_or(|id| a.rider.map(|x| i.users.riders[x].id.as_str()) == Some(id))
            })
        };
        let reason = v["reason"].as_str();
        let mut unasked = Vec::new();
        if reason == Some("CUSTOMER_CANCELLED") && !asked(Kind::Cancel, None) {
            unasked.push("CANCELLED by the customer".to_string());
        }
        if reason == Some(o.reject_reason.as_str()) && !asked(Kind::Reject, None) {
            unasked.push("REJECTED by the owner".to_string());
        }
        if has(v, "ACCEPTED") && !asked(Kind::Accept, None) {
            unasked.push("ACCEPTED".to_string());
        }
        if let Some(rider) = rider_of(v)
            && !asked(Kind::RiderAccept, Some(rider))
        {
            unasked.push(format!("RIDER_ASSIGNED to {rider}"));
        }
        if has(v, "PICKED_UP") && !asked(Kind::Pickup, None) {
            unasked.push("PICKED_UP".to_string());
        }
        if has(v, "DELIVERED") && !asked(Kind::Complete, None) {
            unasked.push("DELIVERED".to_string());
        }
        if !unasked.is_empty() {
            r.breaches.push(format!(
                "#{} {} ({}): {} without a call answered 200 for it",
                o.plan.n,
                o.order_id,
                o.plan.path.name(),
                unasked.join(", ")
            ));
        }
    }
    r
}

/// Each order's history is a walk of the SPEC's state diagram, with its reason.
fn histories(i: &Inputs) -> Row {
    let mut r = Row::new("history follows the state machine", true);
    for o in &i.book.orders {
        let Some(v) = i.snap.views.get(&o.order_id) else {
            continue;
        };
        r.checked += 1;
        let h = history(v);
        let statuses: Vec<&str> = h.iter().map(|(s, _)| s.as_str()).collect();
        let reason = v["reason"].as_str();
        let mut problems = Vec::new();
        if statuses.first() != Some(&"PAID") {
            problems.push("does not start PAID".to_string());
        }
        for w in statuses.windows(2) {
            let ok = matches!(
                (w[0], w[1]),
                ("PAID", "ACCEPTED" | "REJECTED" | "CANCELLED")
                    | ("ACCEPTED", "RIDER_ASSIGNED" | "CANCELLED")
                    | ("RIDER_ASSIGNED", "DELIVERY_STARTED")
                    | ("DELIVERY_STARTED", "PICKED_UP")
                    | ("PICKED_UP", "DELIVERED")
            );
            if !ok {
                problems.push(format!("{} -> {}", w[0], w[1]));
            }
        }
        let times: Vec<Option<i64>> = h.iter().map(|(_, at)| ms(at)).collect();
        if times.iter().any(Option::is_none) || times.windows(2).any(|t| t[0] > t[1]) {
            problems.push("times missing or going back".into());
        }
        if statuses.last().copied() != v["status"].as_str() {
            problems.push(format!("status {} is not the last entry", v["status"]));
        }
        let n = statuses.len();
        let expected_reason: Option<Vec<&str>> =
            match (n.checked_sub(2).map(|k| statuses[k]), statuses.last()) {
                (Some("PAID"), Some(&"CANCELLED")) => Some(vec!["CUSTOMER_CANCELLED"]),
                (Some("ACCEPTED"), Some(&"CANCELLED")) => Some(vec!["NO_RIDER"]),
                (Some("PAID"), Some(&"REJECTED")) => {
                    Some(vec!["SHOP_TIMEOUT", o.reject_reason.as_str()])
                }
                (_, Some(&"DELIVERED")) => Some(vec![]),
                _ => None,
            };
        if let Some(allowed) = expected_reason
            && !(allowed.is_empty() && reason.is_none()
                || reason.is_some_and(|x| allowed.contains(&x)))
        {
            problems.push(format!("ended {} with reason {reason:?}", statuses[n - 1]));
        }
        if !problems.is_empty() {
            r.breaches.push(format!(
                "#{} {} {statuses:?}: {}",
                o.plan.n,
                o.order_id,
                problems.join("; ")
            ));
        }
    }
    r
}

/// Customer, owner and rider read models tell the same story.
fn read_models(i: &Inputs) -> Row {
    let mut r = Row::new("read models agree (customer, owner, rider)", true);
    let customer_lists: Vec<HashMap<String, Value>> =
        i.snap.customer_lists.iter().cloned().map(by_id).collect();
    let rider_lists: Vec<HashMap<String, Value>> =
        i.snap.deliveries.iter().cloned().map(by_id).collect();
    let established: HashSet<&str> = i.book.orders.iter().map(|o| o.order_id.as_str()).collect();
    for o in &i.book.orders {
        let Some(v) = i.snap.views.get(&o.order_id) else {
            continue;
        };
        r.checked += 1;
        let status = &v["status"];
        let mut problems = Vec::new();
        match customer_lists
            .get(o.plan.customer)
            .and_then(|l| l.get(&o.order_id))
        {
            None => problems.push("missing from the customer's list".to_string()),
            Some(c) if &c["status"] != status => {
                problems.push(format!("customer's list says {}", c["status"]))
            }
            _ => {}
        }
        match i
            .snap
            .shop_lists
            .get(o.plan.shop)
            .and_then(|l| l.get(&o.order_id))
        {
            None => problems.push("missing from the owner's list".to_string()),
            Some(d) if &d["status"] != status || d["reason"] != v["reason"] => problems.push(
                format!("owner's view says {} reason {}", d["status"], d["reason"]),
            ),
            _ => {}
        }
        if let Some(rider) = rider_of(v) {
            match i
                .users
                .rider_index(rider)
                .and_then(|x| rider_lists.get(x))
                .and_then(|l| l.get(&o.order_id))
            {
                None => problems.push(format!("missing from {rider}'s deliveries")),
                Some(d) if &d["status"] != status => {
                    problems.push(format!("{rider}'s view says {}", d["status"]))
                }
                _ => {}
            }
        }
        for (x, l) in rider_lists.iter().enumerate() {
            let rid = &i.users.riders[x].id;
            if l.contains_key(&o.order_id) && rider_of(v) != Some(rid.as_str()) {
                problems.push(format!("listed in {rid}'s deliveries, not its rider"));
            }
        }
        let s = status.as_str().unwrap_or("");
        if s == "DELIVERED" && !v["refund"].is_null() {
            problems.push(format!("delivered with refund {}", v["refund"]));
        }
        if matches!(s, "REJECTED" | "CANCELLED") && v["refund"]["amount"].as_i64() != Some(o.total)
        {
            problems.push(format!("refund {} for a total of {}", v["refund"], o.total));
        }
        if !problems.is_empty() {
            r.breaches.push(format!(
                "#{} {} ({s}): {}",
                o.plan.n,
                o.order_id,
                problems.join("; ")
            ));
        }
    }
    for (c, l) in i.snap.customer_lists.iter().enumerate() {
        for x in l {
            let id = x["orderId"].as_str().unwrap_or("?");
            if !established.contains(id) {
                r.breaches.push(format!(
                    "{} lists order {id} ({}), which no call established",
                    i.users.customers[c].name, x["status"]
                ));
            }
        }
    }
    r
}

/// A rider carries one delivery at a time and is free again at the end.
fn riders(i: &Inputs) -> Vec<Row> {
    let mut overlap = Row::new("one delivery per rider at a time", true);
    let mut spans: BTreeMap<String, Vec<(i64, i64, String)>> = BTreeMap::new();
    for o in &i.book.orders {
        let Some(v) = i.snap.views.get(&o.order_id) else {
            continue;
        };
        let Some(rider) = rider_of(v) else { continue };
        let h = history(v);
        let start = h
            .iter()
            .find(|(s, _)| s == "RIDER_ASSIGNED")
            .and_then(|(_, at)| ms(at));
        let end = h
            .iter()
            .find(|(s, _)| is_final(s))
            .and_then(|(_, at)| ms(at))
            .unwrap_or(i64::MAX);
        if let Some(start) = start {
            spans
                .entry(rider.to_string())
                .or_default()
                .push((start, end, o.order_id.clone()));
        }
    }
    for u in &i.users.riders {
        overlap.checked += 1;
        let Some(s) = spans.get_mut(&u.id) else {
            continue;
        };
        s.sort();
        for w in s.windows(2) {
            if w[1].0 < w[0].1 {
                overlap.breaches.push(format!(
                    "{}: {} assigned while still carrying {}",
                    u.name, w[1].2, w[0].2
                ));
            }
        }
    }
    let mut free = Row::new("riders free at the end", true);
    for (x, u) in i.users.riders.iter().enumerate() {
        free.checked += 1;
        let open: Vec<String> = i
            .snap
            .deliveries
            .get(x)
            .into_iter()
            .flatten()
            .filter(|d| !d["status"].as_str().is_some_and(is_final))
            .map(|d| format!("{} {}", d["orderId"], d["status"]))
            .collect();
        if !open.is_empty() {
            free.breaches
                .push(format!("{} still holds {}", u.name, open.join(", ")));
        }
        if let Some(offered) = i.probe_offered
            && !offered.contains(&x)
        {
            free.breaches.push(format!(
                "{} got no offer while every rider was needed (end probe): still held busy?",
                u.name
            ));
        }
    }
    vec![overlap, free]
}

/// One notification per order, status and recipient: none missing, none twice,
/// none for a status the order never had or to someone not involved.
fn notifications(i: &Inputs) -> Row {
    let mut r = Row::new("one notification per status and recipient", true);
    let mut counts: HashMap<(&str, &str, &str), usize> = HashMap::new();
    for (user, feed) in &i.snap.feeds {
        for n in feed {
            let key = (
                user.as_str(),
                n["orderId"].as_str().unwrap_or("?"),
                n["status"].as_str().unwrap_or("?"),
            );
            *counts.entry(key).or_default() += 1;
        }
    }
    let mut expected: HashSet<(&str, &str, &str)> = HashSet::new();
    let mut judged: HashSet<&str> = HashSet::new();
    for o in &i.book.orders {
        let Some(v) = i.snap.views.get(&o.order_id) else {
            continue;
        };
        judged.insert(o.order_id.as_str());
        let customer = i.users.customers[o.plan.customer].id.as_str();
        let owner = i.users.owners[o.plan.shop].id.as_str();
        let rider = rider_of(v);
        let statuses: Vec<&str> = v["history"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h["status"].as_str())
            .collect();
        for s in statuses {
            let mut to = vec![customer, owner];
            if let Some(rd) = rider
                && RIDER_STATUSES.contains(&s)
            {
                to.push(rd);
            }
            for u in to {
                expected.insert((u, o.order_id.as_str(), s));
            }
        }
    }
    for &(u, order, s) in &expected {
        r.checked += 1;
        match counts.get(&(u, order, s)).copied().unwrap_or(0) {
            1 => {}
            0 => r.breaches.push(format!("{u} got no {s} notice of {order}")),
            k => r
                .breaches
                .push(format!("{u} got {k} {s} notices of {order}")),
        }
    }
    let established: HashSet<&str> = i.book.orders.iter().map(|o| o.order_id.as_str()).collect();
    for (&(u, order, s), k) in &counts {
        if expected.contains(&(u, order, s)) {
            continue;
        }
        if !established.contains(order) {
            r.breaches.push(format!(
                "{u} got {k} {s} notice(s) of {order}, which no call established"
            ));
        } else if judged.contains(order) {
            r.breaches.push(format!(
                "{u} got {k} {s} notice(s) of {order}: not its status or not theirs to get"
            ));
        }
    }
    r
}

/// Planned path against where each order ended.
pub fn mix(book: &Book, views: &HashMap<String, Value>, planned: &[(Path, usize)]) -> String {
    let mut out = format!(
        "{:<28} {:>7} {:>6} {:>9} {:>8} {:>9} {:>6}  intended\n",
        "path", "planned", "placed", "DELIVERED", "REJECTED", "CANCELLED", "other"
    );
    for (p, planned_n) in planned {
        let mine: Vec<&Established> = book.orders.iter().filter(|o| o.plan.path == *p).collect();
        let count = |s: &str| {
            mine.iter()
                .filter(|o| views.get(&o.order_id).is_some_and(|v| v["status"] == s))
                .count()
        };
        let (d, rj, c) = (count("DELIVERED"), count("REJECTED"), count("CANCELLED"));
        out += &format!(
            "{:<28} {:>7} {:>6} {:>9} {:>8} {:>9} {:>6}  {}\n",
            p.name(),
            planned_n,
            mine.len(),
            d,
            rj,
            c,
            mine.len() - d - rj - c,
            p.intended()
        );
    }
    out
}

pub fn table(rows: &[Row]) -> String {
    let mut out = format!("{:<44} {:>8} {:>9}\n", "check", "checked", "breaches");
    for r in rows {
        out += &format!("{:<44} {:>8} {:>9}\n", r.name, r.checked, r.breaches.len());
    }
    out
}

#[cfg(test)]
mod tests {
    //! The checks on a small made-up run: a clean one passes every check, and
    //! each kind of breach is caught by the check meant for it.
    use super::*;
    use crate::client::Reply;
    use crate::drive::{Action, Conflict, RepeatPair, User};
    use crate::plan::{OrderPlan, Repeat};
    use serde_json::json;

    fn user(name: &str) -> User {
        User {
            name: name.into(),
            id: name.into(),
            token: String::new(),
        }
    }

    fn users() -> Users {
        Users {
            customers: vec![user("customer1"), user("customer2")],
            owners: vec![user("owner1"), user("owner2")],
            shops: vec!["shop1".into(), "shop2".into()],
            riders: vec![user("rider1"), user("rider2")],
        }
    }

    fn order(n: usize, id: &str, path: Path) -> Established {
        Established {
            plan: OrderPlan {
                n,
                path,
                customer: 0,
                shop: 0,
                items: vec![("m".into(), 1)],
                total: 1000,
                cook_minutes: 1,
                ready_early: true,
                place_repeat: None,
                action_repeat: None,
            },
            order_id: id.into(),
            total: 1000,
            reject_reason: format!("chaos #{n}: sold out"),
        }
    }

    fn at(s: i64) -> String {
        humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(s as u64),
        )
        .to_string()
    }

    fn view(id: &str, h: &[(&str, i64)], rider: Option<&str>, reason: Option<&str>) -> Value {
        let last = h.last().unwrap().0;
        let refund = if matches!(last, "REJECTED" | "CANCELLED") {
            json!({"amount": 1000, "status": "REFUNDED"})
        } else {
            Value::Null
        };
        json!({
            "orderId": id, "status": last, "total": 1000, "reason": reason, "refund": refund,
            "rider": rider.map(|r| json!({"id": r, "distanceM": 100})),
            "history": h.iter().map(|(s, t)| json!({"status": s, "at": at(*t)})).collect::<Vec<_>>(),
        })
    }

    fn reply(status: u16, body_status: &str) -> Reply {
        Reply {
            status,
            body: json!({"status": body_status}),
            hung: false,
            gave_up: false,
        }
    }

    fn action(id: &str, kind: Kind, rider: Option<usize>, r: Reply) -> Action {
        Action {
            order_id: id.into(),
            kind,
            rider,
            reply: r,
        }
    }

    /// o1 delivered by rider1, o2 cancelled by its customer.
    fn clean() -> (Users, Book, Snapshot) {
        let users = users();
        let book = Book {
            orders: vec![
                order(0, "o1", Path::Delivered),
                order(1, "o2", Path::CustomerCancel),
            ],
            actions: vec![
                action("o1", Kind::Accept, None, reply(200, "ACCEPTED")),
                action(
                    "o1",
                    Kind::RiderAccept,
                    Some(0),
                    reply(200, "DELIVERY_STARTED"),
                ),
                action("o1", Kind::Pickup, Some(0), reply(200, "PICKED_UP")),
                action("o1", Kind::Pickup, Some(0), reply(409, "")),
                action("o1", Kind::Complete, Some(0), reply(200, "DELIVERED")),
                action("o2", Kind::Cancel, None, reply(200, "CANCELLED")),
                action("o2", Kind::Cancel, None, reply(200, "CANCELLED")),
            ],
            conflicts: vec![Conflict {
                order_id: "o1".into(),
                kinds: (Kind::Pickup, Kind::Pickup),
                calls: (2, 3),
            }],
            repeats: vec![RepeatPair {
                what: "o2 cancel".into(),
                mode: Repeat::After,
                first: reply(200, "CANCELLED"),
                second: reply(200, "CANCELLED"),
            }],
            ..Default::default()
        };
        let v1 = view(
            "o1",
            &[
                ("PAID", 1),
                ("ACCEPTED", 2),
                ("RIDER_ASSIGNED", 3),
                ("DELIVERY_STARTED", 3),
                ("PICKED_UP", 4),
                ("DELIVERED", 5),
            ],
            Some("rider1"),
            None,
        );
        let v2 = view(
            "o2",
            &[("PAID", 1), ("CANCELLED", 2)],
            None,
            Some("CUSTOMER_CANCELLED"),
        );
        let mut feeds: HashMap<String, Vec<Value>> = HashMap::new();
        for v in [&v1, &v2] {
            for h in v["history"].as_array().unwrap() {
                let s = h["status"].as_str().unwrap();
                let n = json!({"orderId": v["orderId"], "status": s});
                for u in ["customer1", "owner1"] {
                    feeds.entry(u.into()).or_default().push(n.clone());
                }
                if v["orderId"] == "o1" && RIDER_STATUSES.contains(&s) {
                    feeds.entry("rider1".into()).or_default().push(n.clone());
                }
            }
        }
        let snap = Snapshot {
            payments: vec![
                json!({"orderId": "o1", "amount": 1000, "refunded": 0, "refundCount": 0}),
                json!({"orderId": "o2", "amount": 1000, "refunded": 1000, "refundCount": 1}),
            ],
            customer_lists: vec![vec![v1.clone(), v2.clone()], vec![]],
            shop_lists: vec![by_id(vec![v1.clone(), v2.clone()]), HashMap::new()],
            deliveries: vec![vec![v1.clone()], vec![]],
            views: [("o1".to_string(), v1), ("o2".to_string(), v2)].into(),
            feeds,
            errors: vec![],
        };
        (users, book, snap)
    }

    fn judge(users: &Users, book: &Book, snap: &Snapshot) -> BTreeMap<&'static str, usize> {
        let calls = CallBook::default();
        let offered: HashSet<usize> = [0, 1].into();
        evaluate(&Inputs {
            users,
            book,
            calls: &calls,
            snap,
            probe_offered: Some(&offered),
            unexpected_exits: &[],
            processes: 4,
            faults: &[],
            faults_planned: 0,
        })
        .into_iter()
        .filter(|r| !r.breaches.is_empty())
        .map(|r| (r.name, r.breaches.len()))
        .collect()
    }

    #[test]
    fn a_clean_run_passes_every_check() {
        let (u, b, s) = clean();
        assert_eq!(judge(&u, &b, &s), BTreeMap::new());
    }

    #[test]
    fn money_breaches_are_caught() {
        let (u, b, mut s) = clean();
        s.payments
            .push(json!({"orderId": "o1", "amount": 1000, "refunded": 0, "refundCount": 0}));
        s.payments[1]["refundCount"] = json!(2);
        s.payments
            .push(json!({"orderId": "ghost", "amount": 500, "refunded": 0, "refundCount": 0}));
        let j = judge(&u, &b, &s);
        assert_eq!(j["charged exactly once"], 1);
        assert_eq!(j["refunded exactly once iff undelivered"], 1);
        assert_eq!(j["charges without an order refunded"], 1);

        let (u, b, mut s) = clean();
        s.payments[0]["refunded"] = json!(1000);
        let j = judge(&u, &b, &s);
        assert_eq!(j["never both delivered and refunded"], 1);
        assert_eq!(j["refunded exactly once iff undelivered"], 1);
    }

    #[test]
    fn order_and_answer_breaches_are_caught() {
        // Both pickups applied; a refused cancel that took effect anyway; an order left open.
        let (u, mut b, mut s) = clean();
        b.actions[3].reply = reply(200, "PICKED_UP");
        b.actions[5].reply = reply(409, "");
        b.actions[6].reply = reply(409, "");
        b.repeats[0].second = reply(409, "");
        s.views.get_mut("o2").unwrap()["status"] = json!("PAID");
        let j = judge(&u, &b, &s);
        assert_eq!(j["conflicting actions: one wins"], 1);
        assert_eq!(j["answers agree with the history"], 2);
        assert_eq!(j["repeats answer the first answer"], 1);
        assert_eq!(j["final status after the settle period"], 1);
        assert_eq!(j["history follows the state machine"], 1);
        assert!(j.contains_key("read models agree (customer, owner, rider)"));
    }

    #[test]
    fn a_change_nobody_asked_for_is_caught() {
        let (u, mut b, s) = clean();
        b.actions.retain(|a| a.order_id != "o2");
        b.repeats.clear();
        let j = judge(&u, &b, &s);
        assert_eq!(j["every change asked for by a 200"], 1);
        assert_eq!(j.len(), 1, "{j:?}");
    }

    #[test]
    fn rider_and_notification_breaches_are_caught() {
        let (u, mut b, mut s) = clean();
        // A second order given to rider1 while o1 was under way, never finished.
        b.orders.push(order(2, "o3", Path::Delivered));
        let v3 = view(
            "o3",
            &[("PAID", 1), ("ACCEPTED", 2), ("RIDER_ASSIGNED", 4)],
            Some("rider1"),
            None,
        );
        s.views.insert("o3".into(), v3.clone());
        s.customer_lists[0].push(v3.clone());
        s.shop_lists[0].insert("o3".into(), v3.clone());
        s.deliveries[0].push(v3);
        s.payments
            .push(json!({"orderId": "o3", "amount": 1000, "refunded": 0, "refundCount": 0}));
        // One notice twice, one missing.
        let feed = s.feeds.get_mut("customer1").unwrap();
        feed.push(feed[0].clone());
        feed.retain(|n| !(n["orderId"] == "o2" && n["status"] == "CANCELLED"));
        let j = judge(&u, &b, &s);
        assert_eq!(j["one delivery per rider at a time"], 1);
        assert_eq!(j["riders free at the end"], 1);
        // o1's PAID twice, o2's CANCELLED missing, and nobody was told of o3 at all.
        assert_eq!(
            j["one notification per status and recipient"],
            2 + 3 * 2 + 1
        );
    }
}
