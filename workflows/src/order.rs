//! `OrderFulfillment`: one durable workflow per order.
//!
//! The state machine lives in the struct below; updates change it, and three
//! kinds of code react to those changes:
//! - the saga (`run_saga`) drives payment, shop acceptance, cooking, rider
//!   dispatch and compensation;
//! - one projection pump per context writes that context's read model, always
//!   the newest state, in order, retried until the context takes it;
//! - the announcement pump sends every status change to the notification context.
//!
//! Pumps run independently, so one context being down only delays its own view
//! (fault isolation), and because they follow the state rather than the code path
//! that changed it, no status is skipped when several updates land in one task.

use crate::activities::{
    DeliveryActivities, NotificationActivities, OrderActivities, PaymentActivities, ShopActivities,
};
use crate::model::*;
use crate::search;
use std::error::Error;
use std::time::{Duration, UNIX_EPOCH};
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, LocalActivityOptions, SyncWorkflowContext, TimerOptions,
    WorkflowCancellationToken, WorkflowContext, WorkflowContextView, WorkflowResult,
};

type HandlerError = Box<dyn Error + Send + Sync>;

/// How a rider answered the live offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OfferAnswer {
    Accepted,
    Declined,
    /// The rider said yes but was already carrying a delivery.
    Busy,
}

#[derive(Debug, Clone)]
struct LiveOffer {
    rider_id: String,
    distance_m: i64,
    /// A rider's accept is being confirmed by the delivery context right now.
    accepting: bool,
    answer: Option<OfferAnswer>,
}

/// Which read model a projection pump writes.
#[derive(Debug, Clone, Copy)]
enum View {
    Order = 0,
    Shop = 1,
    Delivery = 2,
}

#[workflow]
pub struct OrderFulfillment {
    req: OrderRequest,
    /// Set once the payment outcome is known.
    placed: Option<PlaceOutcome>,
    payment_id: Option<String>,
    /// A charge was sent and its outcome is unknown (timeout, gateway error).
    charge_unknown: bool,
    status: Option<OrderStatus>,
    history: Vec<HistoryEntry>,
    version: u64,
    ready_at: Option<i64>,
    ready: bool,
    rider: Option<RiderRef>,
    offer: Option<LiveOffer>,
    refund: Option<Refund>,
    reason: Option<String>,
    /// Newest version each read model holds (order, shop, delivery).
    projected: [u64; 3],
    /// How many history entries the notification context has been given.
    announced: usize,
    saga_done: bool,
}

#[workflow_methods]
impl OrderFulfillment {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, req: OrderRequest) -> Self {
        Self {
            req,
            placed: None,
            payment_id: None,
            charge_unknown: false,
            status: None,
            history: Vec::new(),
            version: 0,
            ready_at: None,
            ready: false,
            rider: None,
            offer: None,
            refund: None,
            reason: None,
            projected: [0; 3],
            announced: 0,
            saga_done: false,
        }
    }

    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<OrderStatus> {
        let saga = run_saga(ctx.clone());
        let order = project_pump(ctx.clone(), View::Order);
        let shop = project_pump(ctx.clone(), View::Shop);
        let delivery = project_pump(ctx.clone(), View::Delivery);
        let announce = announce_pump(ctx.clone());
        let (saga, order, shop, delivery, announce) =
            temporalio_sdk::workflows::join!(saga, order, shop, delivery, announce);
        saga?;
        order?;
        shop?;
        delivery?;
        announce?;
        // Let in-flight update handlers answer their callers before the run closes.
        let view = ctx.clone();
        ctx.wait_condition(move |_| view.all_handlers_finished())
            .await?;
        Ok(ctx.state(|s| s.status.unwrap_or(OrderStatus::Cancelled)))
    }

    /// Live view of the order (operators, the query read path).
    #[query]
    pub fn snapshot(&self, _ctx: &WorkflowContextView) -> Option<OrderSnapshot> {
        self.status.map(|_| self.snapshot_now())
    }

    /// Placing an order: update-with-start answers once the payment outcome is known.
    #[update]
    pub async fn place(ctx: &mut WorkflowContext<Self>) -> PlaceOutcome {
        if let Some(done) = ctx.state(|s| s.placed.clone()) {
            return done;
        }
        let (req, queue) = ctx.state(|s| {
            (
                ChargeRequest {
                    order_id: s.req.order_id.clone(),
                    amount: s.req.total,
                    token: s.req.payment_token.clone(),
                    idempotency_key: format!("{}:charge", s.req.order_id),
                },
                s.req.queues.payment.clone(),
            )
        });
        let timeout = Duration::from_millis(ctx.state(|s| s.req.timeouts.payment_ms));
        // Registered before the step it undoes: if the outcome stays unknown, the
        // saga settles it (refunds a charge that landed late).
        ctx.state_mut(|s| s.charge_unknown = true);
        let outcome = ctx
            .execute_activity(
                PaymentActivities::charge,
                req,
                ActivityOptions::with_schedule_to_close_timeout(timeout + Duration::from_secs(2))
                    .task_queue(queue)
                    .retry_policy(RetryPolicy::builder().maximum_attempts(1).build())
                    .summary("charge the customer".to_string())
                    .build(),
            )
            .await
            .unwrap_or_else(|e| ChargeOutcome::Unavailable {
                message: format!("payment context did not answer: {e}"),
            });
        let now = now_ms(ctx);
        let placed = ctx.state_mut(|s| {
            let placed = match outcome {
                ChargeOutcome::Approved { payment_id } => {
                    s.charge_unknown = false;
                    s.payment_id = Some(payment_id);
                    s.transition(OrderStatus::Paid, now);
                    PlaceOutcome::Paid {
                        order: Box::new(s.snapshot_now()),
                    }
                }
                ChargeOutcome::Declined { message } => {
                    s.charge_unknown = false;
                    PlaceOutcome::Declined { message }
                }
                ChargeOutcome::Unavailable { message } => PlaceOutcome::Unavailable { message },
            };
            s.placed = Some(placed.clone());
            placed
        });
        if matches!(placed, PlaceOutcome::Paid { .. }) {
            // The customer reads their order right after the 201: answer once the
            // order context holds it.
            let version = ctx.state(|s| s.version);
            let _ = ctx
                .wait_condition(|s| s.projected[View::Order as usize] >= version)
                .await;
        }
        placed
    }

    #[update_validator(cancel)]
    fn validate_cancel(&self, _ctx: &WorkflowContextView, _: &()) -> Result<(), HandlerError> {
        self.require(
            &[OrderStatus::Paid],
            "the shop has already accepted the order",
        )
    }

    /// Customer cancels before the shop accepts; answers once the refund is done.
    #[update]
    pub async fn cancel(ctx: &mut WorkflowContext<Self>) -> ActionResult {
        let now = now_ms(ctx);
        ctx.state_mut(|s| {
            s.reason = Some(reason::CUSTOMER_CANCELLED.to_string());
            s.transition(OrderStatus::Cancelled, now);
        });
        await_refund(ctx).await
    }

    #[update_validator(accept)]
    fn validate_accept(
        &self,
        _ctx: &WorkflowContextView,
        a: &AcceptOrder,
    ) -> Result<(), HandlerError> {
        if !(1..=180).contains(&a.cook_minutes) {
            return Err("cookMinutes must be between 1 and 180".into());
        }
        self.require(&[OrderStatus::Paid], "only a paid order can be accepted")
    }

    #[update]
    pub async fn accept(ctx: &mut WorkflowContext<Self>, a: AcceptOrder) -> ActionResult {
        let now = now_ms(ctx);
        ctx.state_mut(|s| {
            s.ready_at = Some(now + i64::from(a.cook_minutes) * 60_000);
            s.transition(OrderStatus::Accepted, now);
        });
        settled(ctx, &[View::Order, View::Shop]).await
    }

    #[update_validator(reject)]
    fn validate_reject(
        &self,
        _ctx: &WorkflowContextView,
        r: &RejectOrder,
    ) -> Result<(), HandlerError> {
        if r.reason.trim().is_empty() {
            return Err("a reason is required".into());
        }
        self.require(&[OrderStatus::Paid], "only a paid order can be rejected")
    }

    #[update]
    pub async fn reject(ctx: &mut WorkflowContext<Self>, r: RejectOrder) -> ActionResult {
        let now = now_ms(ctx);
        ctx.state_mut(|s| {
            s.reason = Some(r.reason.trim().to_string());
            s.transition(OrderStatus::Rejected, now);
        });
        await_refund(ctx).await
    }

    #[update_validator(mark_ready)]
    fn validate_mark_ready(&self, _ctx: &WorkflowContextView, _: &()) -> Result<(), HandlerError> {
        self.require(
            &[OrderStatus::Accepted, OrderStatus::RiderAssigned],
            "the food can be marked ready only while it is being cooked",
        )?;
        if self.ready {
            return Err("the food is already ready".into());
        }
        Ok(())
    }

    #[update]
    pub async fn mark_ready(ctx: &mut WorkflowContext<Self>) -> ActionResult {
        let now = now_ms(ctx);
        ctx.state_mut(|s| s.food_ready(now));
        settled(ctx, &[View::Order, View::Shop]).await
    }

    #[update_validator(rider_accept)]
    fn validate_rider_accept(
        &self,
        _ctx: &WorkflowContextView,
        a: &RiderAction,
    ) -> Result<(), HandlerError> {
        self.require_live_offer(&a.rider_id)
    }

    /// A rider takes the offer; the delivery context assigns atomically, so a rider
    /// already carrying a delivery is refused.
    #[update]
    pub async fn rider_accept(
        ctx: &mut WorkflowContext<Self>,
        a: RiderAction,
    ) -> Result<ActionResult, HandlerError> {
        let (req, queue) = ctx.state_mut(|s| {
            if let Some(o) = s.offer.as_mut() {
                o.accepting = true;
            }
            (
                RiderOrder {
                    order_id: s.req.order_id.clone(),
                    rider_id: a.rider_id.clone(),
                },
                s.req.queues.delivery.clone(),
            )
        });
        let assigned = ctx
            .execute_activity(
                DeliveryActivities::assign,
                req,
                quick_options(&queue, "assign the rider (one delivery at a time)"),
            )
            .await;
        let now = now_ms(ctx);
        let assigned = matches!(assigned, Ok(true));
        ctx.state_mut(|s| {
            let Some(o) = s.offer.as_mut() else { return };
            if assigned {
                o.answer = Some(OfferAnswer::Accepted);
                s.rider = Some(RiderRef {
                    id: o.rider_id.clone(),
                    distance_m: o.distance_m,
                });
                s.transition(OrderStatus::RiderAssigned, now);
                s.advance(now);
            } else {
                o.answer = Some(OfferAnswer::Busy);
            }
        });
        if !assigned {
            return Err("the rider already carries a delivery".into());
        }
        Ok(settled(ctx, &[View::Order, View::Delivery]).await)
    }

    #[update_validator(rider_decline)]
    fn validate_rider_decline(
        &self,
        _ctx: &WorkflowContextView,
        a: &RiderAction,
    ) -> Result<(), HandlerError> {
        self.require_live_offer(&a.rider_id)
    }

    #[update]
    pub fn rider_decline(
        &mut self,
        _ctx: &mut SyncWorkflowContext<Self>,
        _a: RiderAction,
    ) -> ActionResult {
        if let Some(o) = self.offer.as_mut() {
            o.answer = Some(OfferAnswer::Declined);
        }
        self.action_result()
    }

    #[update_validator(pickup)]
    fn validate_pickup(
        &self,
        _ctx: &WorkflowContextView,
        a: &RiderAction,
    ) -> Result<(), HandlerError> {
        self.require_rider(&a.rider_id)?;
        self.require(
            &[OrderStatus::DeliveryStarted],
            "pickup is possible once the delivery has started",
        )
    }

    #[update]
    pub async fn pickup(ctx: &mut WorkflowContext<Self>, _a: RiderAction) -> ActionResult {
        let now = now_ms(ctx);
        ctx.state_mut(|s| s.transition(OrderStatus::PickedUp, now));
        settled(ctx, &[View::Order, View::Delivery]).await
    }

    #[update_validator(complete)]
    fn validate_complete(
        &self,
        _ctx: &WorkflowContextView,
        a: &RiderAction,
    ) -> Result<(), HandlerError> {
        self.require_rider(&a.rider_id)?;
        self.require(
            &[OrderStatus::PickedUp],
            "only a picked-up order can be completed",
        )
    }

    #[update]
    pub async fn complete(ctx: &mut WorkflowContext<Self>, _a: RiderAction) -> ActionResult {
        let now = now_ms(ctx);
        ctx.state_mut(|s| s.transition(OrderStatus::Delivered, now));
        settled(ctx, &[View::Order, View::Delivery]).await
    }
}

impl OrderFulfillment {
    fn transition(&mut self, status: OrderStatus, at: i64) {
        self.status = Some(status);
        self.history.push(HistoryEntry { status, at });
        self.version += 1;
    }

    /// Food and rider both in place: the delivery starts.
    fn advance(&mut self, now: i64) {
        if self.status == Some(OrderStatus::RiderAssigned) && self.ready {
            self.transition(OrderStatus::DeliveryStarted, now);
        }
    }

    fn food_ready(&mut self, now: i64) {
        if !self.ready {
            self.ready = true;
            self.version += 1;
            self.advance(now);
        }
    }

    fn require(&self, allowed: &[OrderStatus], why: &str) -> Result<(), HandlerError> {
        match self.status {
            Some(s) if allowed.contains(&s) => Ok(()),
            Some(s) => Err(format!("order is {s}: {why}").into()),
            None => Err("order is not established".into()),
        }
    }

    fn require_live_offer(&self, rider_id: &str) -> Result<(), HandlerError> {
        match &self.offer {
            Some(o) if o.rider_id == rider_id && o.answer.is_none() && !o.accepting => Ok(()),
            _ => Err("no live offer of this order for this rider (expired or taken)".into()),
        }
    }

    fn require_rider(&self, rider_id: &str) -> Result<(), HandlerError> {
        match &self.rider {
            Some(r) if r.id == rider_id => Ok(()),
            _ => Err("this delivery is not assigned to this rider".into()),
        }
    }

    fn action_result(&self) -> ActionResult {
        ActionResult {
            status: self.status.unwrap_or(OrderStatus::Cancelled),
            ready_at: self.ready_at,
            refund: self.refund.clone(),
        }
    }

    fn snapshot_now(&self) -> OrderSnapshot {
        let r = &self.req;
        OrderSnapshot {
            order_id: r.order_id.clone(),
            customer_id: r.customer_id.clone(),
            owner_id: r.owner_id.clone(),
            shop: r.shop.clone(),
            items: r.items.clone(),
            total: r.total,
            address: r.address.clone(),
            phone: r.phone.clone(),
            status: self.status.unwrap_or(OrderStatus::Cancelled),
            ready_at: self.ready_at,
            ready: self.ready,
            rider: self.rider.clone(),
            refund: self.refund.clone(),
            reason: self.reason.clone(),
            history: self.history.clone(),
            version: self.version,
        }
    }

    fn is_terminal(&self) -> bool {
        self.status.is_some_and(OrderStatus::is_terminal)
    }
}

fn now_ms<W>(ctx: &WorkflowContext<W>) -> i64 {
    ctx.workflow_time()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as i64)
}

/// Timers carry a summary so operators read what each one waits for in the Web UI.
fn summarized(d: Duration, summary: &str) -> TimerOptions {
    TimerOptions::builder(d)
        .summary(summary.to_string())
        .build()
}

fn until(ctx: &WorkflowContext<OrderFulfillment>, at_ms: i64) -> Duration {
    Duration::from_millis((at_ms - now_ms(ctx)).max(1) as u64)
}

/// Read models follow within an activity round trip; an action answers once the
/// views its caller reads hold the change (read-your-writes for that caller).
async fn settled(ctx: &mut WorkflowContext<OrderFulfillment>, views: &[View]) -> ActionResult {
    let version = ctx.state(|s| s.version);
    let _ = ctx
        .wait_condition(|s| views.iter().all(|v| s.projected[*v as usize] >= version))
        .await;
    ctx.state(|s| s.action_result())
}

async fn await_refund(ctx: &mut WorkflowContext<OrderFulfillment>) -> ActionResult {
    let _ = ctx
        .wait_condition(|s| {
            s.refund
                .as_ref()
                .is_some_and(|r| r.status == RefundStatus::Refunded)
                && s.projected[View::Order as usize] >= s.version
        })
        .await;
    ctx.state(|s| s.action_result())
}

/// Activities that only touch a context's own store: short, retried quickly.
fn quick_options(queue: &str, summary: &str) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
        .task_queue(queue.to_string())
        .summary(summary.to_string())
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(200))
                .maximum_interval(Duration::from_secs(5))
                .build(),
        )
        .build()
}

/// Compensation must finish even if the workflow is being cancelled.
fn detached(queue: &str, summary: &str) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
        .task_queue(queue.to_string())
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(500))
                .maximum_interval(Duration::from_secs(30))
                .build(),
        )
        .cancellation_token(WorkflowCancellationToken::new())
        .summary(summary.to_string())
        .build()
}

async fn run_saga(ctx: WorkflowContext<OrderFulfillment>) -> WorkflowResult<()> {
    let result = saga_steps(&ctx).await;
    ctx.state_mut(|s| s.saga_done = true);
    result
}

async fn saga_steps(ctx: &WorkflowContext<OrderFulfillment>) -> WorkflowResult<()> {
    ctx.wait_condition(|s| s.placed.is_some()).await?;
    if ctx.state(|s| s.status.is_none()) {
        // Not paid: nothing was established; settle a charge whose outcome is unknown.
        if ctx.state(|s| s.charge_unknown) {
            let (req, queue) = ctx.state(|s| {
                (
                    ChargeRequest {
                        order_id: s.req.order_id.clone(),
                        amount: s.req.total,
                        token: s.req.payment_token.clone(),
                        idempotency_key: format!("{}:charge", s.req.order_id),
                    },
                    s.req.queues.payment.clone(),
                )
            });
            ctx.execute_activity(
                PaymentActivities::settle_unknown,
                req,
                detached(&queue, "settle a charge whose outcome was unknown"),
            )
            .await?;
        }
        return Ok(());
    }

    // Shop acceptance. The clock starts once the shop holds the order, so a shop
    // context that is down delays the order instead of rejecting it.
    ctx.wait_condition(|s| s.projected[View::Shop as usize] >= 1 || s.is_terminal())
        .await?;
    let shop_timeout = Duration::from_millis(ctx.state(|s| s.req.timeouts.shop_accept_ms));
    temporalio_sdk::workflows::select! {
        _ = ctx.timer(summarized(shop_timeout, "shop acceptance timeout")) => {
            let now = now_ms(ctx);
            ctx.state_mut(|s| {
                if s.status == Some(OrderStatus::Paid) {
                    s.reason = Some(reason::SHOP_TIMEOUT.to_string());
                    s.transition(OrderStatus::Rejected, now);
                }
            });
        }
        _ = ctx.wait_condition(|s| s.status != Some(OrderStatus::Paid)) => {}
    };

    if ctx.state(|s| s.status == Some(OrderStatus::Accepted)) {
        let (dispatched, cooked) = temporalio_sdk::workflows::join!(dispatch_rider(ctx), cook(ctx));
        dispatched?;
        cooked?;
    }

    if !ctx.state(|s| s.is_terminal()) {
        ctx.wait_condition(|s| s.status == Some(OrderStatus::Delivered))
            .await?;
    }

    if ctx.state(|s| {
        matches!(
            s.status,
            Some(OrderStatus::Rejected) | Some(OrderStatus::Cancelled)
        )
    }) {
        refund(ctx).await?;
    }
    Ok(())
}

/// Compensation for every way a paid order ends without delivery.
async fn refund(ctx: &WorkflowContext<OrderFulfillment>) -> WorkflowResult<()> {
    let (req, queue) = ctx.state_mut(|s| {
        s.refund = Some(Refund {
            amount: s.req.total,
            status: RefundStatus::Pending,
        });
        s.version += 1;
        (
            s.payment_id.clone().map(|payment_id| RefundRequest {
                order_id: s.req.order_id.clone(),
                payment_id,
                amount: s.req.total,
                idempotency_key: format!("{}:refund", s.req.order_id),
            }),
            s.req.queues.payment.clone(),
        )
    });
    if let Some(req) = req {
        ctx.execute_activity(
            PaymentActivities::refund,
            req,
            detached(&queue, "refund the customer"),
        )
        .await?;
    }
    ctx.state_mut(|s| {
        if let Some(r) = s.refund.as_mut() {
            r.status = RefundStatus::Refunded;
        }
        s.version += 1;
    });
    Ok(())
}

/// Cooking completes at `readyAt`, or earlier when the owner marks it ready.
async fn cook(ctx: &WorkflowContext<OrderFulfillment>) -> WorkflowResult<()> {
    let ready_at = ctx.state(|s| s.ready_at.unwrap_or_default());
    temporalio_sdk::workflows::select! {
        _ = ctx.timer(summarized(until(ctx, ready_at), "food ready (readyAt)")) => {
            let now = now_ms(ctx);
            ctx.state_mut(|s| if !s.is_terminal() { s.food_ready(now) });
        }
        _ = ctx.wait_condition(|s| s.ready || s.is_terminal()) => {}
    };
    Ok(())
}

/// Offers the order to the nearest available rider, then the next nearest, until
/// one accepts or `RIDER_SEARCH_TIMEOUT` passes (then: cancelled, NO_RIDER).
async fn dispatch_rider(ctx: &WorkflowContext<OrderFulfillment>) -> WorkflowResult<()> {
    let (order_id, shop, queue, t) = ctx.state(|s| {
        (
            s.req.order_id.clone(),
            s.req.shop.clone(),
            s.req.queues.delivery.clone(),
            s.req.timeouts.clone(),
        )
    });
    let deadline = now_ms(ctx) + t.rider_search_ms as i64;
    // With nobody free, look again at this pace (bounded so a long search stays cheap).
    let poll_ms = (t.rider_search_ms / 10).clamp(500, 15_000) as i64;
    let mut declined: Vec<String> = Vec::new();
    let mut lapsed: Vec<String> = Vec::new();
    loop {
        let now = now_ms(ctx);
        if now >= deadline {
            ctx.state_mut(|s| {
                s.reason = Some(reason::NO_RIDER.to_string());
                s.transition(OrderStatus::Cancelled, now);
            });
            return Ok(());
        }
        let expires_at = (now + t.rider_offer_ms as i64).min(deadline);
        let exclude = declined.iter().chain(lapsed.iter()).cloned().collect();
        let offer = ctx
            .execute_activity(
                DeliveryActivities::offer_nearest,
                OfferRequest {
                    order_id: order_id.clone(),
                    shop: shop.clone(),
                    exclude,
                    expires_at,
                },
                quick_options(&queue, "offer the nearest free rider"),
            )
            .await?;
        let Some(made) = offer else {
            // Riders who let an earlier offer lapse may take it now.
            lapsed.clear();
            ctx.timer(summarized(
                Duration::from_millis(poll_ms.min(deadline - now).max(1) as u64),
                "no free rider: look again",
            ))
            .await;
            continue;
        };
        ctx.state_mut(|s| {
            s.offer = Some(LiveOffer {
                rider_id: made.rider_id.clone(),
                distance_m: made.distance_m,
                accepting: false,
                answer: None,
            })
        });
        temporalio_sdk::workflows::select! {
            _ = ctx.timer(summarized(until(ctx, expires_at), "rider offer expires")) => {}
            _ = ctx.wait_condition(|s| s.offer.as_ref().is_some_and(|o| o.answer.is_some() || o.accepting)) => {}
        };
        // An accept in flight when the offer lapses still gets its answer.
        ctx.wait_condition(|s| {
            s.offer
                .as_ref()
                .is_some_and(|o| !o.accepting || o.answer.is_some())
        })
        .await?;
        let answer = ctx.state_mut(|s| s.offer.take().and_then(|o| o.answer));
        match answer {
            Some(OfferAnswer::Accepted) => return Ok(()),
            Some(OfferAnswer::Declined) | Some(OfferAnswer::Busy) => {
                declined.push(made.rider_id.clone())
            }
            None => lapsed.push(made.rider_id.clone()),
        }
        ctx.execute_activity(
            DeliveryActivities::withdraw_offer,
            RiderOrder {
                order_id: order_id.clone(),
                rider_id: made.rider_id,
            },
            quick_options(&queue, "withdraw the rider's offer"),
        )
        .await?;
    }
}

fn upsert_search_attributes(ctx: &WorkflowContext<OrderFulfillment>) {
    let (status, shop, customer, rider) = ctx.state(|s| {
        (
            s.status.map(|st| st.as_str().to_string()),
            s.req.shop.id.clone(),
            s.req.customer_id.clone(),
            s.rider.as_ref().map(|r| r.id.clone()),
        )
    });
    let Some(status) = status else { return };
    let mut updates = vec![
        search::ORDER_STATUS.value_set(status),
        search::SHOP_ID.value_set(shop),
        search::CUSTOMER_ID.value_set(customer),
    ];
    if let Some(rider) = rider {
        updates.push(search::RIDER_ID.value_set(rider));
    }
    ctx.upsert_search_attributes(updates);
}

/// Keeps one context's read model at the newest version, in order, until the
/// saga is over and the view has caught up.
async fn project_pump(ctx: WorkflowContext<OrderFulfillment>, view: View) -> WorkflowResult<()> {
    let i = view as usize;
    loop {
        ctx.wait_condition(|s| {
            let relevant = match view {
                // The rider's view exists from the moment a rider is assigned.
                View::Delivery => s.rider.is_some(),
                _ => s.status.is_some(),
            };
            (relevant && s.version > s.projected[i]) || s.saga_done
        })
        .await?;
        let (snapshot, queue, relevant) = ctx.state(|s| {
            let relevant = match view {
                View::Delivery => s.rider.is_some(),
                _ => s.status.is_some(),
            };
            (s.snapshot_now(), s.req.queues.clone(), relevant)
        });
        if !relevant || snapshot.version <= ctx.state(|s| s.projected[i]) {
            if ctx.state(|s| s.saga_done) {
                return Ok(());
            }
            continue;
        }
        let version = snapshot.version;
        match view {
            View::Order => {
                // Operators filter by these in the Web UI; kept with the customer's view.
                upsert_search_attributes(&ctx);
                ctx.execute_local_activity(
                    OrderActivities::project,
                    snapshot,
                    LocalActivityOptions::builder()
                        .start_to_close_timeout(Duration::from_secs(5))
                        .summary("customer's view (OrderInfo)".to_string())
                        .build(),
                )
                .await?
            }
            View::Shop => {
                ctx.execute_activity(
                    ShopActivities::project,
                    snapshot,
                    projection_options(&queue.shop, "owner's view (OrderDtl)"),
                )
                .await?
            }
            View::Delivery => {
                ctx.execute_activity(
                    DeliveryActivities::project,
                    snapshot,
                    projection_options(&queue.delivery, "rider's view (DeliveryInfo)"),
                )
                .await?
            }
        }
        ctx.state_mut(|s| s.projected[i] = s.projected[i].max(version));
    }
}

/// A context that is down only delays its own work: wait for it as long as it takes.
fn projection_options(queue: &str, summary: &str) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
        .task_queue(queue.to_string())
        .summary(summary.to_string())
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(200))
                .maximum_interval(Duration::from_secs(10))
                .build(),
        )
        .build()
}

/// Sends every status change, in order and each once, to the notification context.
async fn announce_pump(ctx: WorkflowContext<OrderFulfillment>) -> WorkflowResult<()> {
    loop {
        ctx.wait_condition(|s| s.history.len() > s.announced || s.saga_done)
            .await?;
        let (batch, queue) = ctx.state(|s| {
            (
                Announcement {
                    order: s.snapshot_now(),
                    changes: s.history[s.announced..].to_vec(),
                },
                s.req.queues.notification.clone(),
            )
        });
        if batch.changes.is_empty() {
            return Ok(());
        }
        let sent = batch.order.history.len();
        ctx.execute_activity(
            NotificationActivities::announce,
            batch,
            projection_options(&queue, "notify every recipient of the status change"),
        )
        .await?;
        ctx.state_mut(|s| s.announced = sent);
    }
}
