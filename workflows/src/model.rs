//! Wire types shared by the workflow, the contexts and the API.

use serde::{Deserialize, Serialize};

/// Order status, spelled on the wire exactly as SPEC.md does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Paid,
    Accepted,
    RiderAssigned,
    DeliveryStarted,
    PickedUp,
    Delivered,
    Rejected,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 8] = [
        OrderStatus::Paid,
        OrderStatus::Accepted,
        OrderStatus::RiderAssigned,
        OrderStatus::DeliveryStarted,
        OrderStatus::PickedUp,
        OrderStatus::Delivered,
        OrderStatus::Rejected,
        OrderStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Paid => "PAID",
            OrderStatus::Accepted => "ACCEPTED",
            OrderStatus::RiderAssigned => "RIDER_ASSIGNED",
            OrderStatus::DeliveryStarted => "DELIVERY_STARTED",
            OrderStatus::PickedUp => "PICKED_UP",
            OrderStatus::Delivered => "DELIVERED",
            OrderStatus::Rejected => "REJECTED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        OrderStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderStatus::Delivered | OrderStatus::Rejected | OrderStatus::Cancelled
        )
    }
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reasons an order ends without delivery (besides the owner's free text).
pub mod reason {
    pub const SHOP_TIMEOUT: &str = "SHOP_TIMEOUT";
    pub const NO_RIDER: &str = "NO_RIDER";
    pub const CUSTOMER_CANCELLED: &str = "CUSTOMER_CANCELLED";
    /// An operator cancelled the order's workflow in Temporal.
    pub const OPERATOR_CANCELLED: &str = "OPERATOR_CANCELLED";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Address {
    pub text: String,
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShopRef {
    pub id: String,
    pub name: String,
    pub lat: f64,
    pub lon: f64,
}

/// One priced line of an order; prices come from the shop's menu, never the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    pub menu_id: String,
    pub name: String,
    pub price: i64,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub status: OrderStatus,
    /// Unix epoch milliseconds (workflow time).
    pub at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundStatus {
    Pending,
    Refunded,
    /// The gateway refused the refund for good (e.g. 404/422): an operator must act.
    Failed,
}

impl RefundStatus {
    pub const ALL: [RefundStatus; 3] = [
        RefundStatus::Pending,
        RefundStatus::Refunded,
        RefundStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "PENDING",
            RefundStatus::Refunded => "REFUNDED",
            RefundStatus::Failed => "FAILED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refund {
    pub amount: i64,
    pub status: RefundStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RiderRef {
    pub id: String,
    pub distance_m: i64,
}

/// Timeouts fixed when the order is placed, so the workflow never reads config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeouts {
    pub payment_ms: u64,
    pub shop_accept_ms: u64,
    pub rider_offer_ms: u64,
    pub rider_search_ms: u64,
}

/// Task queues of the contexts, fixed at placement. A deployment may prefix them
/// (one Temporal namespace shared by several stacks); the workflow never guesses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queues {
    pub payment: String,
    pub shop: String,
    pub delivery: String,
    pub notification: String,
}

impl Queues {
    pub fn with_prefix(prefix: &str) -> Self {
        Queues {
            payment: format!("{prefix}payment"),
            shop: format!("{prefix}shop"),
            delivery: format!("{prefix}delivery"),
            notification: format!("{prefix}notification"),
        }
    }
}

/// Workflow input: a validated, priced order waiting for its payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderRequest {
    pub order_id: String,
    pub customer_id: String,
    pub owner_id: String,
    pub shop: ShopRef,
    pub items: Vec<LineItem>,
    pub total: i64,
    pub address: Address,
    pub phone: String,
    pub payment_token: String,
    pub timeouts: Timeouts,
    pub queues: Queues,
}

/// Everything a read model needs, as of one version of the workflow state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderSnapshot {
    pub order_id: String,
    pub customer_id: String,
    pub owner_id: String,
    pub shop: ShopRef,
    pub items: Vec<LineItem>,
    pub total: i64,
    pub address: Address,
    pub phone: String,
    pub status: OrderStatus,
    pub ready_at: Option<i64>,
    pub ready: bool,
    pub rider: Option<RiderRef>,
    pub refund: Option<Refund>,
    pub reason: Option<String>,
    pub history: Vec<HistoryEntry>,
    /// Grows with every change a read model can show; projections keep the newest.
    pub version: u64,
}

/// Result of the `place` update: the payment outcome decides the HTTP answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PlaceOutcome {
    Paid {
        order: Box<OrderSnapshot>,
    },
    Declined {
        message: String,
    },
    /// The gateway failed or did not answer in time: the order is not established.
    Unavailable {
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeRequest {
    pub order_id: String,
    pub amount: i64,
    pub token: String,
    pub idempotency_key: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChargeOutcome {
    Approved { payment_id: String },
    Declined { message: String },
    Unavailable { message: String },
}

/// How a refund ended. Transport failures, timeouts, 5xx and 429 are not
/// outcomes: the activity fails and Temporal retries it with backoff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundOutcome {
    Refunded,
    /// The gateway answered that this refund can never succeed (404, 422, ...).
    Refused {
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundRequest {
    pub order_id: String,
    pub payment_id: String,
    pub amount: i64,
    pub idempotency_key: String,
}

/// What the saga does about a charge whose outcome it never learnt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SettleOutcome {
    /// The gateway had charged after all; that charge is now refunded.
    Refunded {
        payment_id: String,
    },
    NothingCharged,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfferRequest {
    pub order_id: String,
    pub shop: ShopRef,
    /// Riders that must not get this offer (declined it, or let it lapse this round).
    pub exclude: Vec<String>,
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfferMade {
    pub rider_id: String,
    pub distance_m: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiderOrder {
    pub order_id: String,
    pub rider_id: String,
}

/// One recorded version of an order, as the order context keeps it in its
/// outbox and the other contexts receive it from the change feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderChange {
    pub order: OrderSnapshot,
    /// `order.history[since..]` are the status changes new in this version.
    pub since: usize,
}

/// A batch of status changes to announce, with the state they lead to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    pub order: OrderSnapshot,
    pub changes: Vec<HistoryEntry>,
}

/// Answer to an owner, rider or customer action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionResult {
    pub status: OrderStatus,
    pub ready_at: Option<i64>,
    pub refund: Option<Refund>,
    /// The order's version once the action applied (orders on the change feed):
    /// the gateway answers once the caller's read model holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiderAction {
    pub rider_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcceptOrder {
    pub cook_minutes: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectOrder {
    pub reason: String,
}

/// Which charges the reconciliation looks at: approved, never refunded, and
/// older than this (younger ones may still be settled by their own order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnsettledQuery {
    pub charged_before: i64,
}

/// An approved charge with no refund recorded against its order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnsettledCharge {
    pub order_id: String,
    pub payment_id: String,
    pub amount: i64,
}

/// What became of an order, as far as the payment reconciliation cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderOutcome {
    /// Its workflow is still running: it settles its own payment.
    Live,
    Delivered,
    /// Over without delivery, or never established: its charge must be refunded.
    Undelivered,
}

/// What one reconciliation run did; the workflow's result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileReport {
    pub checked: u32,
    pub live: u32,
    pub delivered: u32,
    /// Orders whose charge this run refunded.
    pub refunded: Vec<String>,
    /// Orders whose refund the gateway refused for good: an operator must act.
    pub failed: Vec<String>,
    /// Orders whose refund could not get through this time (gateway down, breaker
    /// open): the next run tries again.
    #[serde(default)]
    pub retry_later: Vec<String>,
}
