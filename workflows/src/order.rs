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
//!
//! Rules for orders started since the `SERIAL_ACTIONS` patch (`v2`):
//! - Actions serialize. Every validator of a workflow task runs before any
//!   handler body, so a validator alone cannot keep two conflicting actions
//!   out. Each action therefore has one rule (`may_cancel`, `may_accept`, …)
//!   that its validator checks (a refusal leaves no trace in history) and its
//!   handler checks again in [`OrderFulfillment::act`] before it changes
//!   anything: the first transition applied wins, a later one answers 409.
//! - An operator's cancel (Temporal workflow cancellation) is an order event, not
//!   an abort. The saga, the pumps and their timers wait on a token of their own
//!   that workflow cancellation does not touch; the cancel becomes
//!   `CANCELLED` with reason `OPERATOR_CANCELLED`, and the saga compensates it as
//!   it would a customer's cancel (refund, views, notifications, rider freed).
//! - A timer that loses its race is cancelled, so it never fires into history later.
//! - A refund ends `REFUNDED` or `FAILED` (the gateway refused it for good: an
//!   operator acts). A caller waiting on it is answered after the first attempt,
//!   with `PENDING` if it is still being retried.
//!
//! Orders started before the patch replay and finish under the earlier rules.
//!
//! Orders started since the `CHANGE_FEED` patch (`v3`, which keeps every `v2`
//! rule) record each new state once: a local activity writes the customer's view
//! and an outbox row of the change in one transaction of the order context's
//! store. The shop, delivery and notification contexts follow that outbox (the
//! change feed, carried by the broker) each at its own pace, so their views and
//! notifications cost this history nothing and a context that is down delays
//! only itself. Only `OrderStatus`, `RiderId` and `RefundStatus` are upserted,
//! and only when they change (`ShopId` and `CustomerId` are set at start). A
//! rider's accept needs no round trip to the delivery context: an offer
//! reserves its rider until this workflow withdraws it or the rider's
//! assignment reaches the delivery context through the feed.

use crate::activities::{
    DeliveryActivities, NotificationActivities, OrderActivities, PaymentActivities, ShopActivities,
};
use crate::model::*;
use crate::search;
use futures::future::FusedFuture;
use std::error::Error;
use std::time::{Duration, UNIX_EPOCH};
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, CancellableFuture, LocalActivityOptions, TimerOptions, WaitConditionOptions,
    WorkflowCancellationError, WorkflowCancellationToken, WorkflowContext, WorkflowContextView,
    WorkflowResult,
};

type HandlerError = Box<dyn Error + Send + Sync>;

/// Patch marking the rules in this file's header; orders started earlier lack it.
pub const SERIAL_ACTIONS: &str = "serial-actions-operator-cancel";

/// Patch marking the change feed (see this file's header); implies `SERIAL_ACTIONS`.
pub const CHANGE_FEED: &str = "order-change-feed";

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
    /// `v3`: the delivery context said the offer lapsed unanswered.
    lapsed: bool,
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
    /// The delivery context is choosing a rider right now: its offer may already
    /// be on a rider's screen before this workflow hears which rider it is.
    offering: bool,
    refund: Option<Refund>,
    reason: Option<String>,
    /// Newest version each read model holds (order, shop, delivery).
    projected: [u64; 3],
    /// How many history entries the notification context has been given.
    announced: usize,
    saga_done: bool,
    /// Started under the `SERIAL_ACTIONS` rules.
    v2: bool,
    /// The refund's first attempt failed; it is being retried with backoff.
    refund_retrying: bool,
    /// Started under the `CHANGE_FEED` rules.
    v3: bool,
    /// Search attributes as last upserted (`v3`): status, rider, refund status.
    upserted: Option<SearchState>,
}

/// The search attributes that change during an order.
type SearchState = (String, Option<String>, Option<String>);

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
            offering: false,
            refund: None,
            reason: None,
            projected: [0; 3],
            announced: 0,
            saga_done: false,
            v2: false,
            refund_retrying: false,
            v3: false,
            upserted: None,
        }
    }

    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<OrderStatus> {
        // A v3 order records one marker; older ones replay the marker they have.
        let v3 = ctx.patched(CHANGE_FEED);
        let v2 = v3 || ctx.patched(SERIAL_ACTIONS);
        ctx.state_mut(|s| {
            s.v2 = v2;
            s.v3 = v3;
        });
        let saga = run_saga(ctx.clone());
        let order = project_pump(ctx.clone(), View::Order);
        let shop = project_pump(ctx.clone(), View::Shop);
        let delivery = project_pump(ctx.clone(), View::Delivery);
        let announce = announce_pump(ctx.clone());
        let operator = operator_cancel(ctx.clone());
        let (saga, order, shop, delivery, announce, operator) =
            temporalio_sdk::workflows::join!(saga, order, shop, delivery, announce, operator);
        saga?;
        order?;
        shop?;
        delivery?;
        announce?;
        operator?;
        // Let in-flight update handlers answer their callers before the run closes.
        let view = ctx.clone();
        wait(ctx, move |_| view.all_handlers_finished()).await?;
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
            let _ = wait(ctx, |s| s.projected[View::Order as usize] >= version).await;
        }
        placed
    }

    #[update_validator(cancel)]
    fn validate_cancel(&self, _ctx: &WorkflowContextView, _: &()) -> Result<(), HandlerError> {
        self.may_cancel()
    }

    /// Customer cancels before the shop accepts; answers once the refund's first
    /// attempt is over.
    #[update]
    pub async fn cancel(ctx: &mut WorkflowContext<Self>) -> Result<ActionResult, HandlerError> {
        let now = now_ms(ctx);
        ctx.state_mut(|s| {
            s.act(Self::may_cancel, |s| {
                s.reason = Some(reason::CUSTOMER_CANCELLED.to_string());
                s.transition(OrderStatus::Cancelled, now);
            })
        })?;
        Ok(await_refund(ctx).await)
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
        self.may_accept()
    }

    #[update]
    pub async fn accept(
        ctx: &mut WorkflowContext<Self>,
        a: AcceptOrder,
    ) -> Result<ActionResult, HandlerError> {
        let now = now_ms(ctx);
        ctx.state_mut(|s| {
            s.act(Self::may_accept, |s| {
                s.ready_at = Some(now + i64::from(a.cook_minutes) * 60_000);
                s.transition(OrderStatus::Accepted, now);
            })
        })?;
        Ok(settled(ctx, &[View::Order, View::Shop]).await)
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
        self.may_reject()
    }

    #[update]
    pub async fn reject(
        ctx: &mut WorkflowContext<Self>,
        r: RejectOrder,
    ) -> Result<ActionResult, HandlerError> {
        let now = now_ms(ctx);
        ctx.state_mut(|s| {
            s.act(Self::may_reject, |s| {
                s.reason = Some(r.reason.trim().to_string());
                s.transition(OrderStatus::Rejected, now);
            })
        })?;
        Ok(await_refund(ctx).await)
    }

    #[update_validator(mark_ready)]
    fn validate_mark_ready(&self, _ctx: &WorkflowContextView, _: &()) -> Result<(), HandlerError> {
        self.may_mark_ready()
    }

    #[update]
    pub async fn mark_ready(ctx: &mut WorkflowContext<Self>) -> Result<ActionResult, HandlerError> {
        let now = now_ms(ctx);
        ctx.state_mut(|s| s.act(Self::may_mark_ready, |s| s.food_ready(now)))?;
        Ok(settled(ctx, &[View::Order, View::Shop]).await)
    }

    #[update_validator(rider_accept)]
    fn validate_rider_accept(
        &self,
        _ctx: &WorkflowContextView,
        a: &RiderAction,
    ) -> Result<(), HandlerError> {
        self.may_answer_offer(&a.rider_id)
    }

    /// A rider takes the offer. Under `v3` the offer already reserved the rider
    /// (see the header), so taking it is one step; before, the delivery context
    /// assigned atomically and a rider already carrying a delivery was refused.
    #[update]
    pub async fn rider_accept(
        ctx: &mut WorkflowContext<Self>,
        a: RiderAction,
    ) -> Result<ActionResult, HandlerError> {
        offer_known(ctx).await;
        if ctx.state(|s| s.v3) {
            // The offer reserved this rider (see the header): taking it is one step.
            let now = now_ms(ctx);
            ctx.state_mut(|s| {
                s.act(
                    |s| {
                        if s.is_terminal() {
                            return Err("the order has been cancelled".into());
                        }
                        s.require_live_offer(&a.rider_id)
                    },
                    |s| {
                        if let Some(o) = s.offer.as_mut() {
                            o.answer = Some(OfferAnswer::Accepted);
                            s.rider = Some(RiderRef {
                                id: o.rider_id.clone(),
                                distance_m: o.distance_m,
                            });
                        }
                        s.transition(OrderStatus::RiderAssigned, now);
                        s.advance(now);
                    },
                )
            })?;
            return Ok(settled(ctx, &[View::Order, View::Delivery]).await);
        }
        let (req, queue) = ctx.state_mut(|s| {
            s.act(
                |s| s.require_live_offer(&a.rider_id),
                |s| {
                    if let Some(o) = s.offer.as_mut() {
                        o.accepting = true;
                    }
                },
            )
            .map(|()| {
                (
                    RiderOrder {
                        order_id: s.req.order_id.clone(),
                        rider_id: a.rider_id.clone(),
                    },
                    s.req.queues.delivery.clone(),
                )
            })
        })?;
        let assigned = ctx
            .execute_activity(
                DeliveryActivities::assign,
                req,
                quick_options(ctx, &queue, "assign the rider (one delivery at a time)"),
            )
            .await;
        let now = now_ms(ctx);
        let assigned = matches!(assigned, Ok(true));
        let over = ctx.state_mut(|s| {
            let over = s.v2 && s.is_terminal();
            let Some(o) = s.offer.as_mut() else {
                return over;
            };
            if assigned && over {
                // An operator cancelled the order while the rider was taking it:
                // record the rider so the rider's view ends and frees them.
                o.answer = Some(OfferAnswer::Busy);
                s.rider = Some(RiderRef {
                    id: o.rider_id.clone(),
                    distance_m: o.distance_m,
                });
                s.version += 1;
            } else if assigned {
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
            over
        });
        if over {
            return Err("the order has been cancelled".into());
        }
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
        self.may_answer_offer(&a.rider_id)
    }

    /// Async like every other action: a sync handler runs while the task's jobs
    /// are read, ahead of async handler bodies, and would jump the arrival order.
    #[update]
    pub async fn rider_decline(
        ctx: &mut WorkflowContext<Self>,
        a: RiderAction,
    ) -> Result<ActionResult, HandlerError> {
        end_offer(ctx, &a.rider_id, |o| o.answer = Some(OfferAnswer::Declined)).await
    }

    #[update_validator(pickup)]
    fn validate_pickup(
        &self,
        _ctx: &WorkflowContextView,
        a: &RiderAction,
    ) -> Result<(), HandlerError> {
        self.may_pick_up(&a.rider_id)
    }

    #[update]
    pub async fn pickup(
        ctx: &mut WorkflowContext<Self>,
        a: RiderAction,
    ) -> Result<ActionResult, HandlerError> {
        let now = now_ms(ctx);
        ctx.state_mut(|s| {
            s.act(
                |s| s.may_pick_up(&a.rider_id),
                |s| s.transition(OrderStatus::PickedUp, now),
            )
        })?;
        Ok(settled(ctx, &[View::Order, View::Delivery]).await)
    }

    #[update_validator(complete)]
    fn validate_complete(
        &self,
        _ctx: &WorkflowContextView,
        a: &RiderAction,
    ) -> Result<(), HandlerError> {
        self.may_complete(&a.rider_id)
    }

    #[update]
    pub async fn complete(
        ctx: &mut WorkflowContext<Self>,
        a: RiderAction,
    ) -> Result<ActionResult, HandlerError> {
        let now = now_ms(ctx);
        ctx.state_mut(|s| {
            s.act(
                |s| s.may_complete(&a.rider_id),
                |s| s.transition(OrderStatus::Delivered, now),
            )
        })?;
        Ok(settled(ctx, &[View::Order, View::Delivery]).await)
    }

    #[update_validator(shop_timeout)]
    fn validate_shop_timeout(
        &self,
        _ctx: &WorkflowContextView,
        _: &(),
    ) -> Result<(), HandlerError> {
        self.may_time_out()
    }

    /// `v3`: the shop context tells the order that its owner has held it unanswered
    /// for `SHOP_ACCEPT_TIMEOUT` (the clock runs from when the owner's view got
    /// it, which only the shop context knows). Rejected with `SHOP_TIMEOUT`.
    #[update]
    pub async fn shop_timeout(
        ctx: &mut WorkflowContext<Self>,
    ) -> Result<ActionResult, HandlerError> {
        let now = now_ms(ctx);
        ctx.state_mut(|s| {
            s.act(Self::may_time_out, |s| {
                s.reason = Some(reason::SHOP_TIMEOUT.to_string());
                s.transition(OrderStatus::Rejected, now);
            })
        })?;
        Ok(ctx.state(|s| s.action_result()))
    }

    #[update_validator(offer_lapsed)]
    fn validate_offer_lapsed(
        &self,
        _ctx: &WorkflowContextView,
        a: &RiderAction,
    ) -> Result<(), HandlerError> {
        if !self.v3 {
            return Err("this order times its offers itself".into());
        }
        self.may_answer_offer(&a.rider_id)
    }

    /// `v3`: the delivery context tells the order that the rider let its offer
    /// lapse (`RIDER_OFFER_TIMEOUT`); the order goes to the next nearest rider.
    #[update]
    pub async fn offer_lapsed(
        ctx: &mut WorkflowContext<Self>,
        a: RiderAction,
    ) -> Result<ActionResult, HandlerError> {
        end_offer(ctx, &a.rider_id, |o| o.lapsed = true).await
    }
}

impl OrderFulfillment {
    fn may_time_out(&self) -> Result<(), HandlerError> {
        if !self.v3 {
            return Err("this order times its acceptance itself".into());
        }
        self.require(&[OrderStatus::Paid], "the shop has already answered")
    }

    /// The one step every action takes: check its rule against the state as it is
    /// now (another action of the same workflow task may have changed it since the
    /// validator ran), then apply the change. Orders started before `SERIAL_ACTIONS`
    /// apply without the second check, as they did.
    fn act(
        &mut self,
        rule: impl FnOnce(&Self) -> Result<(), HandlerError>,
        apply: impl FnOnce(&mut Self),
    ) -> Result<(), HandlerError> {
        if self.v2 {
            rule(self)?;
        }
        apply(self);
        Ok(())
    }

    fn may_cancel(&self) -> Result<(), HandlerError> {
        self.require(
            &[OrderStatus::Paid],
            "the shop has already accepted the order",
        )
    }

    fn may_accept(&self) -> Result<(), HandlerError> {
        self.require(&[OrderStatus::Paid], "only a paid order can be accepted")
    }

    fn may_reject(&self) -> Result<(), HandlerError> {
        self.require(&[OrderStatus::Paid], "only a paid order can be rejected")
    }

    fn may_mark_ready(&self) -> Result<(), HandlerError> {
        self.require(
            &[OrderStatus::Accepted, OrderStatus::RiderAssigned],
            "the food can be marked ready only while it is being cooked",
        )?;
        if self.ready {
            return Err("the food is already ready".into());
        }
        Ok(())
    }

    fn may_pick_up(&self, rider_id: &str) -> Result<(), HandlerError> {
        self.require_rider(rider_id)?;
        self.require(
            &[OrderStatus::DeliveryStarted],
            "pickup is possible once the delivery has started",
        )
    }

    fn may_complete(&self, rider_id: &str) -> Result<(), HandlerError> {
        self.require_rider(rider_id)?;
        self.require(
            &[OrderStatus::PickedUp],
            "only a picked-up order can be completed",
        )
    }

    /// What the saga and the pumps wait with: under `v2` a detached token that
    /// nothing cancels, so an operator's cancel reaches the order as an event
    /// instead of aborting them; before it, the workflow's own.
    fn token(&self) -> Option<WorkflowCancellationToken> {
        self.v2.then(WorkflowCancellationToken::new)
    }

    /// The refund is pending from here; what to ask the payment context, if
    /// anything was charged.
    fn begin_refund(&mut self) -> Option<RefundRequest> {
        self.refund = Some(Refund {
            amount: self.req.total,
            status: RefundStatus::Pending,
        });
        self.version += 1;
        self.payment_id.clone().map(|payment_id| RefundRequest {
            order_id: self.req.order_id.clone(),
            payment_id,
            amount: self.req.total,
            idempotency_key: format!("{}:refund", self.req.order_id),
        })
    }

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

    /// A rider's answer may go on to its handler while the delivery context is
    /// still choosing the rider (`v2`): the offer is on that rider's screen as
    /// soon as the delivery context wrote it, before this workflow hears of it.
    /// The handler waits for the choice and checks [`Self::require_live_offer`].
    fn may_answer_offer(&self, rider_id: &str) -> Result<(), HandlerError> {
        if self.v2 && self.offering && self.offer.is_none() {
            return Ok(());
        }
        self.require_live_offer(rider_id)
    }

    fn require_live_offer(&self, rider_id: &str) -> Result<(), HandlerError> {
        match &self.offer {
            Some(o)
                if o.rider_id == rider_id && o.answer.is_none() && !o.accepting && !o.lapsed =>
            {
                Ok(())
            }
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
            version: self.v3.then_some(self.version),
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
fn summarized(
    d: Duration,
    summary: &str,
    token: Option<WorkflowCancellationToken>,
) -> TimerOptions {
    TimerOptions::builder(d)
        .summary(summary.to_string())
        .maybe_cancellation_token(token)
        .build()
}

/// Waits for a condition on the order, with the order's token (see the header).
fn wait<'a>(
    ctx: &'a WorkflowContext<OrderFulfillment>,
    condition: impl FnMut(&OrderFulfillment) -> bool + 'a,
) -> impl FusedFuture<Output = Result<(), WorkflowCancellationError>> + 'a {
    let token = ctx.state(|s| s.token());
    ctx.wait_condition_with_options(
        condition,
        WaitConditionOptions::builder()
            .maybe_cancellation_token(token)
            .build(),
    )
}

/// Waits until `done` holds or `d` has passed; true when the timer fired first.
/// Under `v2` a timer that loses the race is cancelled, so it never fires into
/// the history later.
async fn timer_or(
    ctx: &WorkflowContext<OrderFulfillment>,
    d: Duration,
    summary: &str,
    done: impl FnMut(&OrderFulfillment) -> bool,
) -> bool {
    let (v2, token) = ctx.state(|s| (s.v2, s.token()));
    let timer = ctx.timer(summarized(d, summary, token));
    let mut timer = std::pin::pin!(timer);
    let fired = temporalio_sdk::workflows::select! {
        _ = timer.as_mut() => true,
        _ = wait(ctx, done) => false,
    };
    if !fired && v2 {
        timer.cancel();
    }
    fired
}

fn until(ctx: &WorkflowContext<OrderFulfillment>, at_ms: i64) -> Duration {
    Duration::from_millis((at_ms - now_ms(ctx)).max(1) as u64)
}

/// A rider's answer that arrived while the delivery context was choosing the
/// rider waits for that choice (see [`OrderFulfillment::may_answer_offer`]).
async fn offer_known(ctx: &WorkflowContext<OrderFulfillment>) {
    if ctx.state(|s| s.offering) {
        let _ = wait(ctx, |s| !s.offering).await;
    }
}

/// A rider's decline, or the delivery context's word that the rider let it
/// lapse, ends the live offer: once the choice of rider is known, the offer
/// must still be this rider's and unanswered (the first answer wins).
async fn end_offer(
    ctx: &mut WorkflowContext<OrderFulfillment>,
    rider_id: &str,
    end: impl FnOnce(&mut LiveOffer),
) -> Result<ActionResult, HandlerError> {
    offer_known(ctx).await;
    ctx.state_mut(|s| {
        s.act(
            |s| s.require_live_offer(rider_id),
            |s| {
                if let Some(o) = s.offer.as_mut() {
                    end(o);
                }
            },
        )?;
        Ok(s.action_result())
    })
}

/// Read models follow within an activity round trip; an action answers once the
/// views its caller reads hold the change (read-your-writes for that caller).
///
/// Under `v3` the workflow holds only the customer's view; the gateway waits for
/// the caller's own view (owner's or rider's) to reach the answer's `version`.
async fn settled(ctx: &mut WorkflowContext<OrderFulfillment>, views: &[View]) -> ActionResult {
    let (version, v3) = ctx.state(|s| (s.version, s.v3));
    let views = if v3 { &[View::Order][..] } else { views };
    let _ = wait(ctx, |s| {
        views.iter().all(|v| s.projected[*v as usize] >= version)
    })
    .await;
    ctx.state(|s| s.action_result())
}

/// Cancel and reject answer with the refund as known once its first attempt is
/// over (`v2`): done, refused for good, or still pending and being retried.
async fn await_refund(ctx: &mut WorkflowContext<OrderFulfillment>) -> ActionResult {
    let _ = wait(ctx, |s| {
        let known = s.refund.as_ref().is_some_and(|r| {
            r.status == RefundStatus::Refunded
                || (s.v2 && (r.status == RefundStatus::Failed || s.refund_retrying))
        });
        known && s.projected[View::Order as usize] >= s.version
    })
    .await;
    ctx.state(|s| s.action_result())
}

/// Activities that only touch a context's own store: short, retried quickly.
fn quick_options(
    ctx: &WorkflowContext<OrderFulfillment>,
    queue: &str,
    summary: &str,
) -> ActivityOptions {
    let mut o = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
        .task_queue(queue.to_string())
        .summary(summary.to_string())
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(200))
                .maximum_interval(Duration::from_secs(5))
                .build(),
        )
        .build();
    o.cancellation_token = ctx.state(|s| s.token());
    o
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
    wait(ctx, |s| s.placed.is_some()).await?;
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
    if ctx.state(|s| s.v3) {
        shop_acceptance(ctx).await?;
    } else {
        shop_acceptance_v2(ctx).await?;
    }

    if ctx.state(|s| s.status == Some(OrderStatus::Accepted)) {
        let (dispatched, cooked) = temporalio_sdk::workflows::join!(dispatch_rider(ctx), cook(ctx));
        dispatched?;
        cooked?;
    }

    if !ctx.state(|s| s.is_terminal()) {
        // Before v2 only a delivery ended an order from here; now an operator's
        // cancel may end it in any state.
        wait(ctx, |s| {
            s.status == Some(OrderStatus::Delivered) || (s.v2 && s.is_terminal())
        })
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

/// Orders before the change feed: the clock starts once the shop's view, which
/// this workflow writes, holds the order.
async fn shop_acceptance_v2(ctx: &WorkflowContext<OrderFulfillment>) -> WorkflowResult<()> {
    wait(ctx, |s| {
        s.projected[View::Shop as usize] >= 1 || s.is_terminal()
    })
    .await?;
    let shop_timeout = Duration::from_millis(ctx.state(|s| s.req.timeouts.shop_accept_ms));
    if timer_or(ctx, shop_timeout, "shop acceptance timeout", |s| {
        s.status != Some(OrderStatus::Paid)
    })
    .await
    {
        reject_unanswered(ctx);
    }
    Ok(())
}

/// `v3`: no timer here. The owner's view follows the change feed, so only the
/// shop context knows since when the owner has seen the order; it sends
/// `shop_timeout` once the owner has held it unanswered for
/// `SHOP_ACCEPT_TIMEOUT`. An order answered in time costs no timer event, and
/// a shop context that is down delays the order instead of rejecting it.
async fn shop_acceptance(ctx: &WorkflowContext<OrderFulfillment>) -> WorkflowResult<()> {
    wait(ctx, |s| s.status != Some(OrderStatus::Paid)).await?;
    Ok(())
}

fn reject_unanswered(ctx: &WorkflowContext<OrderFulfillment>) {
    let now = now_ms(ctx);
    ctx.state_mut(|s| {
        if s.status == Some(OrderStatus::Paid) {
            s.reason = Some(reason::SHOP_TIMEOUT.to_string());
            s.transition(OrderStatus::Rejected, now);
        }
    });
}

/// Compensation for every way a paid order ends without delivery.
async fn refund(ctx: &WorkflowContext<OrderFulfillment>) -> WorkflowResult<()> {
    if !ctx.state(|s| s.v2) {
        return refund_until_done(ctx).await;
    }
    let (req, queue, payment_ms) = ctx.state_mut(|s| {
        (
            s.begin_refund(),
            s.req.queues.payment.clone(),
            s.req.timeouts.payment_ms,
        )
    });
    let outcome = match req {
        None => RefundOutcome::Refunded,
        Some(req) => {
            // One prompt attempt first: the customer or owner waiting on the
            // cancel/reject hears the outcome, or PENDING if this one fails.
            let first = ctx
                .execute_activity(
                    PaymentActivities::refund_order,
                    req.clone(),
                    ActivityOptions::with_schedule_to_close_timeout(
                        Duration::from_millis(payment_ms) + Duration::from_secs(5),
                    )
                    .task_queue(queue.clone())
                    .retry_policy(RetryPolicy::builder().maximum_attempts(1).build())
                    .cancellation_token(WorkflowCancellationToken::new())
                    .summary("refund the customer".to_string())
                    .build(),
                )
                .await;
            match first {
                Ok(outcome) => outcome,
                Err(_) => {
                    ctx.state_mut(|s| s.refund_retrying = true);
                    ctx.execute_activity(
                        PaymentActivities::refund_order,
                        req,
                        detached(&queue, "refund the customer (retrying)"),
                    )
                    .await?
                }
            }
        }
    };
    ctx.state_mut(|s| {
        if let Some(r) = s.refund.as_mut() {
            r.status = match outcome {
                RefundOutcome::Refunded => RefundStatus::Refunded,
                // The payment context logged it; the views, the `RefundStatus`
                // search attribute and the metrics show it to operators.
                RefundOutcome::Refused { .. } => RefundStatus::Failed,
            };
        }
        s.version += 1;
    });
    Ok(())
}

/// The refund of orders started before `SERIAL_ACTIONS`: retried until it succeeds.
async fn refund_until_done(ctx: &WorkflowContext<OrderFulfillment>) -> WorkflowResult<()> {
    let (req, queue) = ctx.state_mut(|s| (s.begin_refund(), s.req.queues.payment.clone()));
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
    if timer_or(ctx, until(ctx, ready_at), "food ready (readyAt)", |s| {
        s.ready || s.is_terminal()
    })
    .await
    {
        let now = now_ms(ctx);
        ctx.state_mut(|s| {
            if !s.is_terminal() {
                s.food_ready(now)
            }
        });
    }
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
    let (v2, v3) = ctx.state(|s| (s.v2, s.v3));
    loop {
        if v2 && ctx.state(|s| s.is_terminal()) {
            // An operator cancelled the order.
            return Ok(());
        }
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
        ctx.state_mut(|s| s.offering = true);
        let offer = ctx
            .execute_activity(
                DeliveryActivities::offer_nearest,
                OfferRequest {
                    order_id: order_id.clone(),
                    shop: shop.clone(),
                    exclude,
                    expires_at,
                },
                quick_options(ctx, &queue, "offer the nearest free rider"),
            )
            .await;
        let made = match offer {
            Ok(Some(made)) => made,
            other => {
                ctx.state_mut(|s| s.offering = false);
                other?;
                // Nobody free. Riders who let an earlier offer lapse may take it now.
                lapsed.clear();
                let pause = Duration::from_millis(poll_ms.min(deadline - now).max(1) as u64);
                if v2 {
                    timer_or(ctx, pause, "no free rider: look again", |s| s.is_terminal()).await;
                } else {
                    ctx.timer(summarized(pause, "no free rider: look again", None))
                        .await;
                }
                continue;
            }
        };
        // One step records the offer and ends `offering`: a rider's answer that
        // waited for the choice finds the offer in place.
        ctx.state_mut(|s| {
            s.offering = false;
            s.offer = Some(LiveOffer {
                rider_id: made.rider_id.clone(),
                distance_m: made.distance_m,
                accepting: false,
                answer: None,
                lapsed: false,
            })
        });
        let answered = |s: &OrderFulfillment| {
            s.offer
                .as_ref()
                .is_some_and(|o| o.answer.is_some() || o.accepting || o.lapsed)
                || (s.v2 && s.is_terminal())
        };
        if v3 {
            // The delivery context times the offer (`offer_lapsed`): no timer here.
            wait(ctx, answered).await?;
        } else {
            timer_or(ctx, until(ctx, expires_at), "rider offer expires", answered).await;
        }
        // An accept in flight when the offer lapses still gets its answer.
        wait(ctx, |s| {
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
            quick_options(ctx, &queue, "withdraw the rider's offer"),
        )
        .await?;
    }
}

fn upsert_search_attributes(ctx: &WorkflowContext<OrderFulfillment>) {
    let (status, shop, customer, rider, refund) = ctx.state(|s| {
        (
            s.status.map(|st| st.as_str().to_string()),
            s.req.shop.id.clone(),
            s.req.customer_id.clone(),
            s.rider.as_ref().map(|r| r.id.clone()),
            // Operators list the refunds that need them by this one (v2 orders).
            s.refund
                .as_ref()
                .filter(|_| s.v2)
                .map(|r| r.status.as_str().to_string()),
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
    if let Some(refund) = refund {
        updates.push(search::REFUND_STATUS.value_set(refund));
    }
    ctx.upsert_search_attributes(updates);
}

/// `v3`: only what changed since the last upsert, and never the attributes the
/// gateway set at start (`ShopId`, `CustomerId`). Each upsert is a history event.
fn upsert_changed_search_attributes(ctx: &WorkflowContext<OrderFulfillment>) {
    let (now, before) = ctx.state(|s| {
        let now: Option<SearchState> = s.status.map(|st| {
            (
                st.as_str().to_string(),
                s.rider.as_ref().map(|r| r.id.clone()),
                s.refund.as_ref().map(|r| r.status.as_str().to_string()),
            )
        });
        (now, s.upserted.clone())
    });
    let Some(now) = now else { return };
    let before = before.unwrap_or_default();
    let mut updates = Vec::new();
    if now.0 != before.0 {
        updates.push(search::ORDER_STATUS.value_set(now.0.clone()));
    }
    if let Some(rider) = now.1.clone().filter(|_| now.1 != before.1) {
        updates.push(search::RIDER_ID.value_set(rider));
    }
    if let Some(refund) = now.2.clone().filter(|_| now.2 != before.2) {
        updates.push(search::REFUND_STATUS.value_set(refund));
    }
    if !updates.is_empty() {
        ctx.upsert_search_attributes(updates);
    }
    ctx.state_mut(|s| s.upserted = Some(now));
}

/// Keeps one context's read model at the newest version, in order, until the
/// saga is over and the view has caught up.
async fn project_pump(ctx: WorkflowContext<OrderFulfillment>, view: View) -> WorkflowResult<()> {
    if ctx.state(|s| s.v3) && !matches!(view, View::Order) {
        // The context follows the change feed instead.
        return Ok(());
    }
    let i = view as usize;
    loop {
        wait(&ctx, |s| {
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
            View::Order if ctx.state(|s| s.v3) => {
                upsert_changed_search_attributes(&ctx);
                let (token, since, sent) = ctx.state(|s| (s.token(), s.announced, s.history.len()));
                ctx.execute_local_activity(
                    OrderActivities::record,
                    OrderChange {
                        order: snapshot,
                        since,
                    },
                    LocalActivityOptions::builder()
                        .start_to_close_timeout(Duration::from_secs(5))
                        .summary("customer's view and the change feed".to_string())
                        .maybe_cancellation_token(token)
                        .build(),
                )
                .await?;
                ctx.state_mut(|s| s.announced = s.announced.max(sent));
            }
            View::Order => {
                // Operators filter by these in the Web UI; kept with the customer's view.
                upsert_search_attributes(&ctx);
                let token = ctx.state(|s| s.token());
                ctx.execute_local_activity(
                    OrderActivities::project,
                    snapshot,
                    LocalActivityOptions::builder()
                        .start_to_close_timeout(Duration::from_secs(5))
                        .summary("customer's view (OrderInfo)".to_string())
                        .maybe_cancellation_token(token)
                        .build(),
                )
                .await?
            }
            View::Shop => {
                ctx.execute_activity(
                    ShopActivities::project,
                    snapshot,
                    projection_options(&ctx, &queue.shop, "owner's view (OrderDtl)"),
                )
                .await?
            }
            View::Delivery => {
                ctx.execute_activity(
                    DeliveryActivities::project,
                    snapshot,
                    projection_options(&ctx, &queue.delivery, "rider's view (DeliveryInfo)"),
                )
                .await?
            }
        }
        ctx.state_mut(|s| s.projected[i] = s.projected[i].max(version));
    }
}

/// A context that is down only delays its own work: wait for it as long as it takes.
fn projection_options(
    ctx: &WorkflowContext<OrderFulfillment>,
    queue: &str,
    summary: &str,
) -> ActivityOptions {
    let mut o = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
        .task_queue(queue.to_string())
        .summary(summary.to_string())
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(200))
                .maximum_interval(Duration::from_secs(10))
                .build(),
        )
        .build();
    o.cancellation_token = ctx.state(|s| s.token());
    o
}

/// Sends every status change, in order and each once, to the notification context.
async fn announce_pump(ctx: WorkflowContext<OrderFulfillment>) -> WorkflowResult<()> {
    if ctx.state(|s| s.v3) {
        // The notification context follows the change feed instead.
        return Ok(());
    }
    loop {
        wait(&ctx, |s| s.history.len() > s.announced || s.saga_done).await?;
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
            projection_options(&ctx, &queue, "notify every recipient of the status change"),
        )
        .await?;
        ctx.state_mut(|s| s.announced = sent);
    }
}

/// An operator cancelled the order's workflow (`temporal workflow cancel`): under
/// `v2` that ends an unfinished order `CANCELLED` (`OPERATOR_CANCELLED`) and the
/// saga compensates it like any other cancel. Before `v2` cancellation aborted
/// the run, as it still does for those orders.
async fn operator_cancel(ctx: WorkflowContext<OrderFulfillment>) -> WorkflowResult<()> {
    if !ctx.state(|s| s.v2) {
        return Ok(());
    }
    let requested = temporalio_sdk::workflows::select! {
        _ = ctx.cancelled() => true,
        _ = wait(&ctx, |s| s.saga_done) => false,
    };
    if !requested {
        return Ok(());
    }
    // An order still being paid for is decided by its payment first.
    wait(&ctx, |s| s.placed.is_some()).await?;
    let now = now_ms(&ctx);
    ctx.state_mut(|s| {
        if s.status.is_some_and(|st| !st.is_terminal()) {
            s.reason = Some(reason::OPERATOR_CANCELLED.to_string());
            s.transition(OrderStatus::Cancelled, now);
        }
    });
    Ok(())
}
